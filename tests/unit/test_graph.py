"""graph: edges from handles and files, topological order, cycles, selection."""

from __future__ import annotations

import pytest

from zenbuild import File, Output, PipelineError, pipeline, step


@step
def a(out: Output) -> None: ...


@step
def b(src: File, out: Output) -> None: ...


@step
def c(x: int, y: int = 0) -> int:
    return x + y


def test_handles_and_files_make_edges_in_order(tmp_path):
    @pipeline
    def p():
        b(File("build/a.txt"), Output("build/b.txt"))  # consumer first
        a(Output("build/a.txt"))
        c(c(1), y=c(2))

    g = p().trace(tmp_path)
    assert g.order[:2] == ["a", "b"]
    assert g.nodes["b"].deps == ["a"]
    assert set(g.nodes["c_3"].deps) == {"c", "c_2"}
    assert g.select(["b"]) == {"a", "b"}
    with pytest.raises(PipelineError, match="no step named 'zz'"):
        g.select(["zz"])


def test_output_inside_output_folder_is_refused(tmp_path):
    @pipeline
    def p():
        a(Output("build"))
        a(Output("build/x"))

    with pytest.raises(PipelineError, match="overlapping outputs"):
        p().trace(tmp_path)


def test_output_inside_output_folder_is_refused_with_a_sibling_sorted_between(tmp_path):
    """build/d-x sorts between build/d and build/d/y.txt as text: the overlap of those two
    was missed, and the run failed later, after steps ran."""
    @pipeline
    def p():
        a(Output("build/d"))
        a(Output("build/d-x"))
        a(Output("build/d/y.txt"))

    with pytest.raises(PipelineError, match="overlapping outputs 'build/d' and 'build/d/y.txt'"):
        p().trace(tmp_path)


def test_file_inside_output_folder_depends_on_it(tmp_path):
    @pipeline
    def p():
        b(File("build/models/m.bin"), Output("report.txt"))
        a(Output("build/models"))

    g = p().trace(tmp_path)
    assert g.nodes["b"].deps == ["a"]


def test_cycle_is_named(tmp_path):
    @pipeline
    def p():
        b(File("x"), Output("y"))
        b(File("y"), Output("x"))

    with pytest.raises(PipelineError, match="cycle: b -> b_2 -> b|cycle: b_2 -> b -> b_2"):
        p().trace(tmp_path)


def test_pipeline_without_steps_and_bad_arguments(tmp_path):
    @pipeline
    def empty():
        pass

    with pytest.raises(PipelineError, match="calls no step"):
        empty().trace(tmp_path)

    @pipeline
    def bad():
        c()

    with pytest.raises(PipelineError, match="step c: missing a required argument: 'x'"):
        bad().trace(tmp_path)


def test_step_outside_a_pipeline_is_a_plain_call():
    assert c(2, y=3) == 5


def test_handle_cannot_be_used_as_a_value(tmp_path):
    @pipeline
    def p():
        if c(1):
            pass

    with pytest.raises(PipelineError, match="used as a condition.*promise of a value"):
        p().trace(tmp_path)


@pytest.mark.parametrize("use", [
    lambda h: f"run-{h}", lambda h: str(h), lambda h: "%s" % h,  # noqa: UP031
    lambda h: "{}".format(h),  # noqa: UP032
    lambda h: format(h, ">5"),
])
def test_handle_is_not_a_string(tmp_path, use):
    @pipeline
    def p():
        use(c(1))

    with pytest.raises(PipelineError, match="output of step c was used as a string"):
        p().trace(tmp_path)


def test_handle_repr_stays_for_display(tmp_path):
    seen = []

    @pipeline
    def p():
        seen.append(repr(c(1)))

    p().trace(tmp_path)
    assert seen == ["<output of step c>"]


def test_call_ids_name_nodes(tmp_path):
    @pipeline
    def p():
        c(1)
        c(2, id="second")
        c(3)
        c(4, zen_id="fourth")

    g = p().trace(tmp_path)
    assert list(g.nodes) == ["c", "second", "c_2", "fourth"]
    assert g.nodes["second"].args == {"x": 2, "y": 0}  # id is not passed to the function


def test_a_parameter_named_id_stays_a_param(tmp_path):
    @step
    def fetch(id: int) -> int:
        return id

    @pipeline
    def p():
        fetch(id=5)
        fetch(id=6, zen_id="six")

    g = p().trace(tmp_path)
    assert list(g.nodes) == ["fetch", "six"]
    assert g.nodes["six"].args == {"id": 6}
    assert fetch(id=7) == 7 and c(3, id="ignored-outside-a-pipeline") == 3


@pytest.mark.parametrize("body, message", [
    (lambda: (c(1, id="a"), c(2, id="a")), "given twice"),
    (lambda: (c(0), c(1, id="c")), "automatic name"),
    (lambda: (c(1, id="c_2"), c(2), c(3)), "automatic name"),
    (lambda: (c(1, id="no spaces"),), "not a valid call id"),
    (lambda: (c(1, id="a", zen_id="b"),), "not both"),
])
def test_bad_call_ids(tmp_path, body, message):
    @pipeline
    def p():
        body()

    with pytest.raises(PipelineError, match=message):
        p().trace(tmp_path)


def test_tuple_outputs_unpack(tmp_path):
    from typing import Tuple

    @step
    def two() -> Tuple[int, str]:
        return 1, "a"

    @pipeline
    def p():
        x, y = two()
        c(x)

    g = p().trace(tmp_path)
    arg = g.nodes["c"].args["x"]
    assert arg.node == "two" and arg.path == (0,)


def test_marker_encodings_are_pinned():
    """A marker's canonical encoding is part of every fingerprint that holds it: the bytes
    must not change (old stores would miss every entry)."""
    from zenbuild.graph import FileRef, OutputRef

    assert FileRef("data/é.csv").item == b"m17:file\x00data/\xc3\xa9.csv\x00"
    assert FileRef("raw", "**/*.csv").item == b"m17:file\x00raw\x00**/*.csv"
    assert FileRef("raw", "").item == FileRef("raw").item == b"m9:file\x00raw\x00"
    assert OutputRef("out.txt").item == b"m14:output\x00out.txt"


def _kahn(nodes):
    """The reference order: Kahn's walk, the lowest invocation index first among ready nodes."""
    import heapq

    indeg = {n.name: len(n.deps) for n in nodes}
    down = {n.name: [] for n in nodes}
    for n in nodes:
        for d in n.deps:
            down[d].append(n.name)
    index = {n.name: n.index for n in nodes}
    heap = [(index[k], k) for k, v in indeg.items() if v == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, k = heapq.heappop(heap)
        out.append(k)
        for m in down[k]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(heap, (index[m], m))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_order_is_kahn_s_whether_or_not_every_edge_points_back(seed):
    import random

    from zenbuild.graph import Graph, Node

    rng = random.Random(seed)
    size = rng.randint(1, 30)
    forward = seed % 2 == 1  # some File inputs read a later step's Output
    nodes = [Node(name=f"s{i}", step=None, index=i, args={}) for i in range(size)]  # type: ignore[arg-type]
    for i, n in enumerate(nodes):
        n.upstream = [f"s{j}" for j in range(i) if rng.random() < 0.2]
        if forward and i + 1 < size and rng.random() < 0.3:
            later = rng.randrange(i + 1, size)
            n.file_upstream = [f"s{later}"]
    for k in range(size - 1, 0, -1):  # no cycle: a forward edge's target reads nothing later
        for j in range(k):
            if f"s{k}" in nodes[j].file_upstream:
                nodes[k].file_upstream = [d for d in nodes[k].file_upstream if int(d[1:]) < j]
    want = _kahn(nodes)
    if len(want) != size:  # a cycle after all: the graph says so
        with pytest.raises(PipelineError, match="cycle"):
            Graph("p", nodes)
        return
    assert Graph("p", nodes).order == want
