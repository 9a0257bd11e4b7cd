"""End-to-end: with `-j 2` and `--executor dask`, a large value goes from the worker that made
it into the store and to its consumer without passing through the main process (issue 13):
the main process's own peak memory stays far below the value's size, in the run that makes it
and in a later run where only the consumer executes; and every value gets the digest it gets
in-process, also one that holds project code (whose digests a stored value carries)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import REPO, TICK, Project

MIB = 256  # the big array; the main process's bound below is well under it

PIPE = '''
from dataclasses import dataclass

import numpy as np

from zenbuild import pipeline, step
from ticker import tick


@dataclass
class Box:
    data: np.ndarray

    def total(self) -> float:
        return float(self.data.sum())


@step
def big(n: int):
    tick("big")
    return np.full(n, 1.5, dtype=np.float64)


@step
def boxed(m: int):
    tick("boxed")
    return Box(np.arange(m, dtype=np.float64))  # a project class: stored by the worker too


@step
def total(a, b) -> float:
    tick("total")
    return float(a.sum()) + b.total()


@pipeline
def p(n: int = N, m: int = M):
    total(big(n), boxed(m))
'''

# Runs the real CLI in its own process and writes that process's peak RSS (not its workers')
SELF_RSS = REPO / "benchmarks" / "self_rss.py"


def make(root: Path, n: int, m: int = 1 << 18) -> Project:
    """The project: a plain array of n float64 and a Box of m (2 MiB by default)."""
    root.mkdir(parents=True)
    p = Project(root)
    p.write("ticker.py", TICK)
    p.write("pipe.py", PIPE.replace("= N,", f"= {n},").replace("= M)", f"= {m})"))
    p.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    return p


def run_measured(p: Project, *args: str) -> float:
    """Run `zenbuild run ARGS` in the project; the main process's peak RSS in MiB."""
    rss = p.root.parent / "rss.txt"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    proc = subprocess.run([sys.executable, str(SELF_RSS), str(rss), "run", *args],
                          cwd=str(p.root), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return float(rss.read_text())


def value_digests(root: Path) -> Dict[str, str]:
    db = sqlite3.connect(str(root / ".zenbuild" / "zenbuild.db"))
    try:
        return dict(db.execute(  # the entries the steps' current states point at
            "SELECT s.step, a.value_digest FROM step_state s JOIN actions a"
            " ON a.fingerprint = s.fingerprint").fetchall())
    finally:
        db.close()


EXECUTORS = [pytest.param(["-j", "2"], id="jobs"),
             pytest.param(["--executor", "dask", "-j", "2"], id="dask")]


@pytest.mark.parametrize("how", EXECUTORS)
def test_a_large_value_skips_the_main_process(tmp_path: Path, how: List[str]) -> None:
    if "dask" in how:
        pytest.importorskip("distributed")
    n = MIB * 1024 * 1024 // 8
    # the Box (a project class, whose code digest its stored value carries) is as big: the
    # worker digests Box's code itself, so its value does not come through here either
    p = make(tmp_path / "proj", n, n)
    cold = run_measured(p, *how)
    assert sorted(p.ticks()) == ["big", "boxed", "total"]
    pipe = p.read("pipe.py").replace("float(a.sum()) + b.total()", "float(a.sum()) + b.total() + 0")
    p.write("pipe.py", pipe)
    consumer_only = run_measured(p, *how)
    assert p.ticks() == ["total"]
    # through the pipe a value costs this process twice its size (556-578 MiB measured with
    # the workers' store writes turned off), and encoding the Box here (as before the workers
    # digested project code) would map all of its blob; the process itself (Python, numpy,
    # Dask's client) needs 40-70 MiB
    assert cold < MIB * 0.75, (cold, consumer_only)
    assert consumer_only < MIB * 0.75, (cold, consumer_only)
    res = json.loads(subprocess.run(
        [sys.executable, "-m", "zenbuild", "run", "--json"], cwd=str(p.root), text=True,
        capture_output=True, env={**os.environ, "NO_COLOR": "1"}, check=True).stdout)
    assert {s["name"]: s["status"] for s in res["steps"]} == {
        "big": "cached", "boxed": "cached", "total": "cached"}
    # nothing left in STORE/tmp: the workers' temp files were renamed into place and the
    # run's marker removed
    assert sorted(os.listdir(p.root / ".zenbuild" / "tmp")) == []


@pytest.mark.parametrize("how", EXECUTORS)
def test_worker_stored_values_digest_as_in_process(tmp_path: Path, how: List[str]) -> None:
    if "dask" in how:
        pytest.importorskip("distributed")
    n = 1 << 18  # 2 MiB: stored by the worker
    here = make(tmp_path / "here", n)
    here.run("run")
    there = tmp_path / "there"
    shutil.copytree(here.root, there, ignore=shutil.ignore_patterns(".zenbuild"))
    Project(there).run("run", *how)
    a, b = value_digests(here.root), value_digests(there)
    assert set(a) == {"big", "boxed", "total"}
    assert a == b  # Box's value carries Box's code digest, also when a worker stored it
    # the blob the worker wrote for Box's value (without the code digests) is gone: every
    # file blob left is one an entry uses
    cas = there / ".zenbuild" / "cas"
    files = {sub.name + f.name for sub in cas.iterdir() for f in sub.iterdir()}
    assert files and files <= set(b.values())
    # and that digest follows the code: an edit of Box.total changes it (so does the producer's
    # fingerprint, as for any value whose class changed)
    for root in (here.root, there):
        src = (root / "pipe.py").read_text()
        (root / "pipe.py").write_text(src.replace("return float(self.data.sum())",
                                                  "return float(self.data.sum()) * 1"))
    here.run("run")
    Project(there).run("run", *how)
    a2, b2 = value_digests(here.root), value_digests(there)
    assert a2 == b2
    assert a2["boxed"] != a["boxed"] and a2["big"] == a["big"]


NON_NATIVE = '''
import numpy as np

from zenbuild import Output, pipeline, step


@step
def load() -> dict:
    # FITS and network-order data are big-endian; a record with a non-native field
    rec = np.zeros(2, dtype=[("t", ">f8"), ("n", "<i2")])
    rec["t"] = [1.5, 2.5]
    return {"a": np.arange(5, dtype=">i4"), "rec": rec}


@step
def write(v: dict, out: Output) -> str:
    out.write_bytes(v["a"].tobytes() + v["rec"].tobytes())
    return v["a"].dtype.str + " " + v["rec"].dtype.descr[0][1]


@pipeline
def p():
    write(load(), Output("build/raw.bin"))
'''


@pytest.mark.parametrize("how", EXECUTORS)
def test_a_small_non_native_array_from_a_worker_keeps_its_byte_order(
        tmp_path: Path, how: List[str]) -> None:
    """A small value comes back from a worker through the pool's pipe; pickled at protocol 4
    there, numpy 2.4 gave a big-endian array back as a native one: the consumer saw other
    bytes than in process, and the value another digest."""
    if "dask" in how:
        pytest.importorskip("distributed")
    here = Project(tmp_path / "here")
    here.root.mkdir()
    here.write("pipe.py", NON_NATIVE)
    here.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    here.run("run")
    there = tmp_path / "there"
    shutil.copytree(here.root, there, ignore=shutil.ignore_patterns(".zenbuild", "build"))
    Project(there).run("run", *how)
    assert (there / "build" / "raw.bin").read_bytes() == (here.root / "build" / "raw.bin").read_bytes()
    assert value_digests(there) == value_digests(here.root)
    # and the same store serves the other mode: -j after a serial run is all cached
    res = json.loads(subprocess.run(
        [sys.executable, "-m", "zenbuild", "run", "--json", *how], cwd=str(here.root), text=True,
        capture_output=True, env={**os.environ, "NO_COLOR": "1"}, check=True).stdout)
    assert {s["name"]: s["status"] for s in res["steps"]} == {"load": "cached", "write": "cached"}
