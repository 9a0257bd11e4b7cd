"""End-to-end: a stored value records the code of the registered value types that encoded it
(a dynamic trace, discovered.py "types"), checked before its entry is served. A producer that
never names the type (a library function returns a pandas DataFrame the project registered a
reducer for; a helper builds a @value_type instance from a plugin named in its config) has
no registration in its static key: before, an edit of the reducer, save() or load() left it
cached, serving the value the old code encoded (and decoding it with the new load())."""

from __future__ import annotations

import json

import pytest

# ---- a library type (pandas.DataFrame) with a project reducer --------------------------------

# what a reason names it by, module.qualname: "pandas.DataFrame" on pandas 3, which sets the
# public classes' __module__ to "pandas"; "pandas.core.frame.DataFrame" on pandas 2 (Python 3.10)
def _dataframe() -> str:
    import pandas as pd

    return f"{pd.DataFrame.__module__}.DataFrame"

FRAMES = '''
import pandas as pd

import zenbuild


def reduce_frame(df):
    # rebuilt by a library function: no project code is named in the stored pickle
    return (pd.json_normalize, ([{k: int(v) for k, v in row.items()}
                                 for row in df.to_dict("records")],))


zenbuild.register_value_type(pd.DataFrame, reduce_frame)
'''

FRAME_PIPE = '''
import pandas as pd

from zenbuild import step, pipeline
from ticker import tick
import frames  # noqa: F401  (the registration)


@step
def make():
    tick("make")
    return pd.json_normalize([{"a": 1}, {"a": 2}])


@step
def use(df) -> list:
    tick("use")
    print("use got", list(df["a"]))
    return list(df["a"])


@pipeline
def p():
    use(make())
'''

# ---- a project @value_type, built by a helper in another module ----------------------------

MODEL = '''
import zenbuild


@zenbuild.value_type
class Model:
    def __init__(self, w):
        self.w = w

    def save(self, folder):
        (folder / "w.txt").write_text(",".join(str(x) for x in self.w))

    @classmethod
    def load(cls, folder):
        return cls([int(x) for x in (folder / "w.txt").read_text().split(",")])
'''

HELPERS = '''
import importlib

PLUGIN = "model"  # the module that provides models, as a config file would name it


def build(w):
    return importlib.import_module(PLUGIN).Model(w)
'''

MODEL_PIPE = '''
from zenbuild import step, pipeline
from ticker import tick
import helpers
import model  # noqa: F401  (loaded with the pipeline, as a package's __init__ would)


@step
def make():
    tick("make")
    return helpers.build([1, 2])


@step
def use(m) -> list:
    tick("use")
    print("use got", m.w)
    return m.w


@pipeline
def p():
    use(make())
'''


def _edit(project, rel: str, old: str, new: str) -> None:
    text = project.read(rel)
    assert old in text, (old, text)
    project.write(rel, text.replace(old, new))


def _frames(project, *jobs: str) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("frames.py", FRAMES)
    project.write("pipe.py", FRAME_PIPE)
    r = project.run("run", *jobs)
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [1, 2]" in r.output, r
    r = project.run("run", *jobs)
    assert project.ticks() == [], r


def _models(project, *jobs: str) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", MODEL)
    project.write("helpers.py", HELPERS)
    project.write("pipe.py", MODEL_PIPE)
    r = project.run("run", *jobs)
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [1, 2]" in r.output, r
    r = project.run("run", *jobs)
    assert project.ticks() == [], r


def _reasons(project, step: str) -> list:
    r = project.run("explain", step, "--json")
    return json.loads(r.stdout)["reason_records"]


JOBS = [pytest.param((), id="j1"), pytest.param(("-j", "2"), id="j2")]


@pytest.mark.parametrize("jobs", JOBS)
def test_editing_a_library_types_reducer_reruns_a_producer_that_never_names_it(project, jobs):
    _frames(project, *jobs)
    _edit(project, "frames.py", "{k: int(v)", "{k: 10 * int(v)")
    kinds = _reasons(project, "make")
    assert [k["kind"] for k in kinds] == ["value_type_code_changed"], kinds
    assert kinds[0]["subject"] == _dataframe(), kinds
    r = project.run("run", *jobs)
    assert sorted(project.ticks()) == ["make", "use"], r
    assert "use got [10, 20]" in r.output, r
    r = project.run("run", *jobs)  # the new entry records the new code: served
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


def test_the_reason_is_shown_by_explain_and_run(project):
    _frames(project)
    _edit(project, "frames.py", "{k: int(v)", "{k: 10 * int(v)")
    r = project.run("explain", "make")
    assert (f"the code registered to store {_dataframe()} changed since the value "
            "was stored") in r.output, r
    r = project.run("run", "-v")
    assert _dataframe() in r.output, r


def test_an_edit_that_encodes_the_same_bytes_reruns_only_the_producer(project):
    """The producer reruns (its value was encoded by other code), gives the same bytes, so
    the same digest: its consumer is served (early cutoff), and a revert is served too."""
    _frames(project)
    _edit(project, "frames.py", "for row in", "for rec in")
    _edit(project, "frames.py", "in row.items()", "in rec.items()")
    r = project.run("run")
    assert project.ticks() == ["make"] and r.cached == ["use"], r
    r = project.run("run")
    assert project.ticks() == [], r
    _edit(project, "frames.py", "for rec in", "for row in")
    _edit(project, "frames.py", "in rec.items()", "in row.items()")
    r = project.run("run")  # the first entry (this code's) is kept as an alternate
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


def test_a_comment_in_the_reducer_reruns_nothing(project):
    _frames(project)
    _edit(project, "frames.py", "def reduce_frame(df):\n", "def reduce_frame(df):  # note\n")
    r = project.run("run")
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


@pytest.mark.parametrize("jobs", JOBS)
@pytest.mark.parametrize("edit", [
    ("(folder / \"w.txt\").write_text(\",\".join(str(x) for x in self.w))",
     "(folder / \"w.txt\").write_text(\",\".join(str(3 * x) for x in self.w))", "[3, 6]"),
    ("return cls([int(x) for x in", "return cls([-int(x) for x in", "[-1, -2]"),
], ids=["save", "load"])
def test_editing_save_or_load_reruns_a_producer_that_builds_it_elsewhere(project, jobs, edit):
    _models(project, *jobs)
    old, new, shown = edit
    _edit(project, "model.py", old, new)
    kinds = _reasons(project, "make")
    # (the module trace may name model.py too: the type's own reason must be there)
    assert ("value_type_code_changed", "model.Model") in [(k["kind"], k["subject"])
                                                          for k in kinds], kinds
    r = project.run("run", *jobs)
    assert sorted(project.ticks()) == ["make", "use"], r
    assert f"use got {shown}" in r.output, r
    r = project.run("run", *jobs)
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


def test_an_unchanged_type_is_served_in_a_fresh_process(project):
    """The no-op: the class's module is not imported by the pipeline; checking the record
    imports it (as loading the value would) and the entry is served."""
    _models(project)
    r = project.run("run")
    assert project.ticks() == [] and sorted(r.cached) == ["make", "use"], r


@pytest.mark.parametrize("executor", [
    pytest.param(("-j", "2"), id="processes"),
    pytest.param(("--executor", "dask", "-j", "2"), id="dask"),
])
def test_a_big_value_stored_by_its_worker_carries_the_trace(project, executor):
    """-j 2 with a value over the size a worker writes into the store itself
    (worker_store.WORKER_STORE_MIN): the classes whose registered code encoded it come back
    with the StoredValue, and the entry records them as when the main process encodes."""
    if "dask" in executor:
        pytest.importorskip("distributed")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("model.py", MODEL)
    project.write("helpers.py", HELPERS)
    project.write("pipe.py", MODEL_PIPE.replace("helpers.build([1, 2])",
                                                "helpers.build(list(range(300_000)))")
                  .replace('print("use got", m.w)', 'print("use got", sum(m.w))'))
    r = project.run("run", *executor)
    assert sorted(project.ticks()) == ["make", "use"], r
    assert f"use got {sum(range(300_000))}" in r.output, r
    r = project.run("run", *executor)
    assert project.ticks() == [], r
    _edit(project, "model.py", "return cls([int(x) for x in", "return cls([2 * int(x) for x in")
    kinds = [(k["kind"], k["subject"]) for k in _reasons(project, "make")]
    assert ("value_type_code_changed", "model.Model") in kinds, kinds  # (and model.py, used)
    r = project.run("run", *executor, "-v")
    assert sorted(project.ticks()) == ["make", "use"], r
    assert f"use got {2 * sum(range(300_000))}" in r.output, r
    r = project.run("run", *executor)
    assert project.ticks() == [], r
