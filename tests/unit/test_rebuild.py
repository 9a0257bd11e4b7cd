"""rebuild: the caching precedence table, decide() and the reasons it gives."""

from __future__ import annotations

import pytest

from zenbuild import reasons as R
from zenbuild import step
from zenbuild.graph import Node
from zenbuild.reasons import Reason, kinds, texts
from zenbuild.rebuild import Components, cache_policy, decide, diff_components
from zenbuild.store.db import ActionEntry


def node_for(enable_cache=None, no_cache=False):
    @step(enable_cache=enable_cache)
    def s() -> None: ...

    s.no_cache = no_cache
    return Node(name="s", step=s, index=0, args={})


@pytest.mark.parametrize(
    "run,config,stepset,pipe,expected,source",
    [
        (None, None, None, None, True, "default"),
        (None, None, None, False, False, "pipeline"),
        (None, None, True, False, True, "step"),
        (None, None, False, None, False, "step"),
        (None, True, False, None, True, "config"),
        (None, False, True, True, False, "config"),
        (False, True, True, True, False, "run"),
        (True, False, False, False, True, "run"),
    ],
)
def test_precedence(run, config, stepset, pipe, expected, source):
    p = cache_policy(node_for(stepset), run, config, pipe)
    assert (p.enabled, p.source) == (expected, source)


def comps(**over):
    base = dict(code={"m.s": "c1"}, code_meta={"m.s": ["step", "m.py"]}, packages={"np": "1"},
                params={"top": ["p1", "10"]}, inputs={"words": {"load": "i1"}},
                files={"data/w.txt": ["f1", 2100]}, env={"python": "3.11"})
    base.update(over)
    return Components(**base)


def entry(c, fp="old"):
    return ActionEntry(fp, "p", "s", "v", {}, c.to_json())


def test_decide_hit_miss_and_reasons():
    c = comps()
    prev = entry(c, c.fingerprint())
    v = decide(node_for(), c, c.fingerprint(), cache_policy(node_for(), None, None, None),
               prev, lambda fp: None, lambda e: None)
    assert not v.execute and v.reasons == [Reason(R.UP_TO_DATE)]
    c2 = comps(params={"top": ["p2", "5"]}, files={"data/w.txt": ["f2", 2400]})
    v = decide(node_for(), c2, c2.fingerprint(), cache_policy(node_for(), None, None, None),
               prev, lambda fp: None, lambda e: None)
    assert v.execute
    assert v.reasons == [Reason(R.PARAM_CHANGED, "top", "10", "5"),
                         Reason(R.FILE_CHANGED, "data/w.txt", 2100, 2400)]
    assert texts(v.reasons) == ["param top: 10 -> 5",
                                "file data/w.txt: content changed (2.1 KB -> 2.3 KB)"]
    v = decide(node_for(), c2, c2.fingerprint(), cache_policy(node_for(), None, None, None),
               None, lambda fp: None, lambda e: None)
    assert v.reasons == [Reason(R.NEVER_BUILT)] and texts(v.reasons) == ["never built"]


def test_no_cache_and_disabled_always_execute_but_all_reasons_adds_the_rest():
    c = comps()
    prev = entry(c, c.fingerprint())
    n = node_for(no_cache=True)
    v = decide(n, c, c.fingerprint(), cache_policy(n, True, None, None), prev,
               lambda fp: None, lambda e: None)
    assert v.execute and kinds(v.reasons) == [R.NO_CACHE]
    assert texts(v.reasons) == ["no_cache: external input, always executes"]
    n = node_for()
    v = decide(n, c, c.fingerprint(), cache_policy(n, False, None, None), prev,
               lambda fp: None, lambda e: None)
    assert v.reasons == [Reason(R.CACHE_DISABLED, "run")]
    assert texts(v.reasons) == ["caching disabled by --no-cache"]
    v = decide(n, c, c.fingerprint(), cache_policy(n, None, False, None), prev,
               lambda fp: None, lambda e: None)
    assert v.reasons == [Reason(R.CACHE_DISABLED, "config", detail={"step": "s"})]
    assert texts(v.reasons) == ["caching disabled by zenbuild.toml [steps.s] enable_cache = false"]
    n = node_for()
    c2 = comps(code={"m.s": "c2"})
    v = decide(n, c2, c2.fingerprint(), cache_policy(n, None, None, False), prev,
               lambda fp: None, lambda e: None, all_reasons=True)
    assert texts(v.reasons) == ["caching disabled by @pipeline(enable_cache=False)",
                                "code: step function m.s (m.py) changed"]
    assert v.reasons[1] == Reason(R.CODE_CHANGED, "m.s", "c1", "c2", {"item": "step", "file": "m.py"})


def test_unusable_entry_executes_with_its_reason():
    c = comps()
    prev = entry(c, c.fingerprint())
    v = decide(node_for(), c, c.fingerprint(), cache_policy(node_for(), None, None, None),
               prev, lambda fp: None, lambda e: Reason(R.BLOB_MISSING))
    assert v.execute and v.entry is prev and v.reasons == [Reason(R.BLOB_MISSING)]
    assert texts(v.reasons) == ["the cached result is missing from the store"]


def test_diff_words():
    old = comps().to_json()
    new = comps(code={"m.s": "c1", "m.helper": "h"},
                code_meta={"m.s": ["step", "m.py"], "m.helper": ["function", "m.py"]},
                packages={"np": "2"}, inputs={"words": {"load": "i2"}},
                files={"data/w.txt": ["f1", 2100], "data/new.csv": ["n", 5]}).to_json()
    assert kinds(diff_components(old, new)) == [
        R.CODE_ADDED, R.PACKAGE_VERSION, R.INPUT_CHANGED, R.FILE_NEW]
    assert diff_components(old, new)[0].detail == {"item": "function", "file": "m.py"}
    assert diff_components(old, new)[2].detail == {"step": "load"}
    assert texts(diff_components(old, new)) == [
        "code: now uses helper m.helper (m.py)",
        "package np: 1 -> 2",
        "input words: upstream step load produced different output",
        "file data/new.csv: new input",
    ]


def test_fingerprint_depends_on_every_component():
    base = comps().fingerprint()
    for over in [dict(code={"m.s": "x"}), dict(packages={}), dict(params={"top": ["p9"]}),
                 dict(inputs={}), dict(files={}), dict(env={"python": "3.12"})]:
        assert comps(**over).fingerprint() != base
    assert comps(code_meta={}).fingerprint() == base  # labels are not part of it


def test_long_params_are_displayed_as_the_start_of_their_repr():
    from zenbuild.fingerprint.params import display_param
    from zenbuild.graph import FileRef

    for value in (["a" * 30, "b" * 30], ["x", "y"], [1], list(range(40)), ("t", "u")):
        full = repr(value)
        assert display_param(value) == (full if len(full) <= 60 else full[:57] + "...")
    files = [FileRef(f"data/f{i}.txt") for i in range(9)]
    shown = display_param(files)
    assert shown.startswith("[File('data/f0.txt'), File('data/f1.txt')") and len(shown) == 60


def test_markers_are_displayed_as_their_own_repr_alone_and_nested():
    from zenbuild.fingerprint.params import display_param
    from zenbuild.graph import FileRef, InputRef, OutputRef

    assert display_param(FileRef("a.txt")) == "File('a.txt')"
    assert display_param(OutputRef("build/o.txt")) == "Output('build/o.txt')"
    assert display_param(InputRef("up", ())) == "<output of up>"
    assert display_param([FileRef("a"), {"k": FileRef("b")}, ("t", OutputRef("c"))]) == (
        "[File('a'), {'k': File('b')}, ('t', Output('c'))]")
    assert display_param([InputRef("u", (0,)), "x"]) == "[<output of u[0]>, 'x']"


def test_decide_with_a_pending_upstream_stops_at_it_or_compares_the_rest_first():
    c = comps()
    prev = entry(c, c.fingerprint())
    pol = cache_policy(node_for(), None, None, None)
    # a run (first reason only): the first pending upstream, named without its argument
    v = decide(node_for(), None, "", pol, prev, lambda fp: None, lambda e: None,
               pending=["load", "other"])
    assert v.execute and v.reasons == [Reason(R.UPSTREAM_PENDING, "load")]
    # every reason: nothing else differs, so only the pending upstream, by the argument reading it
    v = decide(node_for(), c, c.fingerprint(), pol, prev, lambda fp: None, lambda e: None,
               all_reasons=True, pending=["load"])
    assert v.execute and v.entry is None
    assert v.reasons == [Reason(R.UPSTREAM_PENDING, "load", detail={"arg": "words"})]
    assert texts(v.reasons) == ["input words: upstream step load would execute"]
    # its own change comes first, then the pending upstream
    c2 = comps(params={"top": ["p2", "5"]})
    v = decide(node_for(), c2, c2.fingerprint(), pol, prev, lambda fp: None, lambda e: None,
               all_reasons=True, pending=["load"])
    assert kinds(v.reasons) == [R.PARAM_CHANGED, R.UPSTREAM_PENDING]
    # components that cannot be made (an upstream writes the file): one reason per pending step
    v = decide(node_for(), None, "", pol, prev, lambda fp: None, lambda e: None,
               all_reasons=True, pending=["load", "other"])
    assert v.reasons == [Reason(R.UPSTREAM_PENDING, "load"), Reason(R.UPSTREAM_PENDING, "other")]


def test_file_digests_reads_the_dry_run_overlay_per_path_and_keeps_the_stat_cache(tmp_path):
    from zenbuild.digest import StatCache, digest_file
    from zenbuild.graph import FileRef
    from zenbuild.paths import MissingInput
    from zenbuild.rebuild import OutputOverlay, file_digests

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("changed on disk")
    (tmp_path / "out" / "stray.txt").write_text("a run removes this")
    (tmp_path / "in.txt").write_text("input")
    root = str(tmp_path)
    cache = StatCache()
    file_digests(root, [FileRef("in.txt")], cache)
    for rel in list(cache.records):  # make the record old enough to be trusted
        rec = cache.records[rel]
        rec.recorded_ns = rec.key[1] + 10**10
    hashed = cache.hashed_bytes
    over = OutputOverlay()
    over.add_file("out/a.txt", "stored-a", 7)
    over.add_file("out/b.txt", "stored-b", 3)
    over.remove("out/stray.txt")
    files, stats = file_digests(root, [FileRef("in.txt"), FileRef("out", "**/*")], cache, over)
    assert files == {"in.txt": [digest_file(str(tmp_path / "in.txt"))[0], 5],
                     "out/a.txt": ["stored-a", 7], "out/b.txt": ["stored-b", 3]}
    assert set(stats) == {"in.txt"}  # the overlay's files have no stat to vouch for them
    assert cache.hashed_bytes == hashed  # one restorable output does not switch the cache off
    with pytest.raises(MissingInput):
        file_digests(root, [FileRef("out/stray.txt")], cache, over)
