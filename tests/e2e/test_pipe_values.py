"""End-to-end: with `-j 2` and `--executor dask`, every value a serial run can store crosses the
pipe between the main process and a worker, both ways (a producer's value back, a consumer's
arguments out), with the digests a serial run gives: small torch tensors of the dtypes
torch's own pickle cannot load (uint16/32/64, float8, complex32), and values of a
``@value_type`` or ``register_value_type`` class whose object does not pickle at all. Plain
pickle on the pipe broke the pool (a sibling step failed too), blamed the result for an
argument, or killed a Dask run with a traceback. And a value that cannot be loaded on the
other side fails only its own step, with a message saying which way it failed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Project

from tests.e2e.test_worker_values import EXECUTORS, value_digests

TORCH_PIPE = '''
import torch
from zenbuild import pipeline, step

DTYPES = [name for name in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2",
                            "complex32") if hasattr(torch, name)]


@step
def make() -> dict:
    return {name: torch.arange(1000, dtype=torch.int32).to(getattr(torch, name))
            for name in DTYPES}


@step
def total(ts: dict) -> dict:
    return {name: float(t.to(torch.complex64).real.sum()) for name, t in ts.items()}


@step
def innocent(n: int) -> int:
    return n * 2


@pipeline
def p():
    total(make())
    innocent(21)
'''


def _twins(tmp_path: Path, pipe: str) -> Dict[str, Project]:
    """The same project twice: "serial" run in process, "workers" not run yet."""
    here = Project(tmp_path / "serial")
    here.root.mkdir()
    here.write("pipe.py", pipe)
    here.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    there = tmp_path / "workers"
    shutil.copytree(here.root, there)
    r = here.run("run")
    assert "failed" not in r.output, r
    return {"serial": here, "workers": Project(there)}


def _check_both_ways(twins: Dict[str, Project], how: List[str], producer: str,
                     consumer: str, steps: List[str], *params: str) -> None:
    serial, workers = twins["serial"], twins["workers"]
    # values back: every step runs in a worker, with the digests the serial run stored
    r = workers.run("run", *how, *params, timeout=300)
    assert sorted(r.executed) == sorted(steps), r
    assert "failed" not in r.output and "Traceback" not in r.output, r
    want = value_digests(serial.root)
    assert value_digests(workers.root) == want
    # arguments out: the producer cached by the serial run, only the consumer in a worker
    r = serial.run("run", *how, *params, "--rerun", consumer, timeout=300)
    assert r.executed == [consumer] and producer in r.cached, r
    assert "failed" not in r.output and "Traceback" not in r.output, r
    assert value_digests(serial.root) == want


@pytest.mark.parametrize("how", EXECUTORS)
def test_small_tensors_torch_cannot_unpickle_cross_the_worker_pipe(
        tmp_path: Path, how: List[str]) -> None:
    pytest.importorskip("torch")
    if "dask" in how:
        pytest.importorskip("distributed")
    twins = _twins(tmp_path, TORCH_PIPE)
    _check_both_ways(twins, how, "make", "total", ["make", "total", "innocent"])


VALUE_TYPE_PIPE = '''
import threading
from pathlib import Path

import zenbuild
from zenbuild import pipeline, step


@zenbuild.value_type
class Index:
    """Saves itself because it cannot be pickled (the lock stands in for a native handle)."""

    def __init__(self, items):
        self.items = list(items)
        self._handle = threading.Lock()

    def save(self, folder: Path) -> None:
        (folder / "items.txt").write_text("\\n".join(self.items))

    @classmethod
    def load(cls, folder: Path) -> "Index":
        return cls((folder / "items.txt").read_text().split("\\n"))


class Handle:
    def __init__(self, name):
        self.name = name
        self._lock = threading.Lock()


def reduce_handle(h):
    return (Handle, (h.name,))


zenbuild.register_value_type(Handle, reduce_handle)


@step
def build(n: int) -> tuple:
    return Index([str(i) for i in range(n)]), Handle(f"h{n}")


@step
def query(built: tuple) -> list:
    ix, h = built
    return [len(ix.items), ix.items[-1], h.name]


@pipeline
def p(n: int = 3):
    query(build(n))
'''


@pytest.mark.parametrize("n", [pytest.param(3, id="small"),
                               pytest.param(300_000, id="large")])  # >= 1 MiB: the worker
@pytest.mark.parametrize("how", EXECUTORS)                          # writes it to the store
def test_registered_value_types_that_do_not_pickle_cross_the_worker_pipe(
        tmp_path: Path, how: List[str], n: int) -> None:
    if "dask" in how:
        pytest.importorskip("distributed")
    pipe = VALUE_TYPE_PIPE.replace("n: int = 3", f"n: int = {n}")
    twins = _twins(tmp_path, pipe)
    _check_both_ways(twins, how, "build", "query", ["build", "query"])


UNLOADABLE_PIPE = '''
import multiprocessing

from zenbuild import pipeline, step


def _in_worker():
    return multiprocessing.parent_process() is not None  # the run's main process has none


def rebuild_here(x):
    if not _in_worker():
        raise ValueError("this value loads only in a worker")
    return OnlyThere(x)


def rebuild_there(x):
    if _in_worker():
        raise ValueError("this value loads only in the main process")
    return OnlyHere(x)


class OnlyThere:
    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return (rebuild_here, (self.x,))


class OnlyHere:
    def __init__(self, x):
        self.x = x

    def __reduce__(self):
        return (rebuild_there, (self.x,))


@step
def back() -> object:
    return OnlyThere(1)


@step
def make() -> object:
    return OnlyHere(2)


@step
def use(v) -> int:
    return v.x


@step
def good() -> int:
    return 7


@pipeline
def p():
    back()
    use(make())
    good()
'''


@pytest.mark.parametrize("how", EXECUTORS)
def test_a_value_that_cannot_be_loaded_across_the_pipe_fails_only_its_step(
        project: Project, how: List[str]) -> None:
    if "dask" in how:
        pytest.importorskip("distributed")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", UNLOADABLE_PIPE)
    r = project.run("run", *how, "--keep-going", check=1, timeout=300)
    assert sorted(r.executed) == ["good", "make"], r
    assert "2 executed, 0 cached, 2 failed" in r.output, r
    assert ("step back returned a value that its worker sent back but this process cannot "
            "load: ValueError: this value loads only in a worker") in r.output, r
    assert ("step use: its arguments cannot be loaded in the worker process: ValueError: "
            "this value loads only in the main process") in r.output, r
    assert "worker process died" not in r.output and "Traceback" not in r.output, r
