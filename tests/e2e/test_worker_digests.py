"""End-to-end: a value digests the same in a -j worker as in the main process (README: "Values
digest the same in every process"). A value that comes back from a worker is a copy made
through a pipe: its strings are other objects than the interned ones the main process has
(a dataclass whose field value equals a field name, a dict key equal to a module name), and
its pandas objects come without the caches the main process filled. Before, the serial run
and the -j run stored different digests for the same value: `run --no-cache -j 2` after a
serial run warned "step make is not deterministic", and after an edit that did not change
make's value, `run -j 2` ran its consumer again ("upstream step make produced different
output")."""

from __future__ import annotations

import re

import pytest
from conftest import Project

DATACLASS = '''
from dataclasses import dataclass
from zenbuild import step, pipeline
from ticker import tick

@dataclass
class Rec:
    kind: str
    value: int

@step
def make() -> Rec:
    return Rec(kind="value", value=1)

@step
def down(r: Rec) -> int:
    tick("down")
    return r.value

@pipeline
def p():
    down(make())
'''

UUID_KEY = '''
import uuid
from zenbuild import step, pipeline
from ticker import tick

class Box:
    def __init__(self, d):
        self.d = d

@step
def make() -> Box:
    return Box({"uuid": uuid.UUID(int=5), "kind": "Box"})

@step
def down(b: Box) -> int:
    tick("down")
    return len(b.d)

@pipeline
def p():
    down(make())
'''

PANDAS = '''
import numpy as np
import pandas as pd
from zenbuild import step, pipeline
from ticker import tick

@step
def make() -> pd.DataFrame:
    return pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")})

@step
def down(df: pd.DataFrame) -> int:
    tick("down")
    return int(df["n"].sum())

@pipeline
def p():
    down(make())
'''

PANDAS_MORE = '''
import numpy as np
import pandas as pd
from zenbuild import step, pipeline
from ticker import tick

@step
def make() -> dict:
    mi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])
    return {
        "period": pd.DataFrame({"p": pd.period_range("2020-01", periods=3, freq="M")}),
        "sparse": pd.DataFrame({"s": pd.arrays.SparseArray([0, 0, 1, 0])}),
        "mi": pd.DataFrame(np.arange(4).reshape(2, 2), columns=mi),
        "mi_t": pd.DataFrame(np.arange(4).reshape(2, 2), columns=mi).T,
        "cat": pd.Series(pd.Categorical(["x", "y", "x"])),
    }

@step
def down(d: dict) -> int:
    tick("down")
    return len(d)

@pipeline
def p():
    down(make())
'''

CASES = {"dataclass": DATACLASS, "uuid key": UUID_KEY, "pandas Int64": PANDAS,
         "pandas period, sparse, MultiIndex, categorical": PANDAS_MORE}


def _setup(project: Project, name: str) -> str:
    if name.startswith("pandas"):
        pytest.importorskip("pandas")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", CASES[name])
    return CASES[name]


@pytest.mark.parametrize("name", list(CASES))
def test_a_worker_stores_the_digest_a_serial_run_stored(project: Project, name: str) -> None:
    _setup(project, name)
    first = project.run("run")
    assert sorted(first.executed) == ["down", "make"], first
    again = project.run("run", "--no-cache", "-j", "2")
    assert sorted(again.executed) == ["down", "make"], again
    assert "not deterministic" not in again.output, again.output
    status = project.run("explain", "make")
    assert "not deterministic" not in status.output, status.output


@pytest.mark.parametrize("name", list(CASES))
def test_an_edit_that_keeps_the_value_keeps_the_consumer_cached_under_j2(
        project: Project, name: str) -> None:
    source = _setup(project, name)
    assert sorted(project.run("run").executed) == ["down", "make"]
    project.ticks()
    # a no-op edit of make: it runs again (in a worker) and returns the same value
    edited = re.sub(r"(def make\(\) -> \w+(\.\w+)?:\n)", r"\1    x = 1\n", source)
    assert edited != source
    project.write("pipe.py", edited)
    r = project.run("run", "-j", "2", "--explain")
    assert r.executed == ["make"], r
    assert r.cached == ["down"], r
    assert "produced different output" not in r.output, r.output
    assert project.ticks() == []
