"""End-to-end: the spool files through which a step's forked workers report their reads
(trace/forks.py) never outlive the zenbuild process that collects them. A fork Pool kept at
module level and never closed left one in the temp folder per run (its workers outlived the
last merge); the files of a root killed outright stay until the next root's sweep, which never
touches a live root's files, nor a file that is not a spool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Project

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"),
                                reason="fork workers; flock")

# The pool is made at import (the pipeline module's import is recorded too) and never closed:
# maxtasksperchild=1 replaces each worker after one task, during the step and after it.
POOL = '''
import multiprocessing

from zenbuild import pipeline, step
from ticker import tick


def read(path):
    with open(path) as f:
        return f.read().strip()


POOL = multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1)


@step
def pooled() -> str:
    tick("pooled")
    return "+".join(POOL.map(read, ["data/a.txt", "data/b.txt", "data/a.txt"]))


@step
def show(v: str) -> None:
    print("VALUE", v)


@pipeline
def p():
    show(pooled())
'''


def spools(tmp: Path) -> List[str]:
    return sorted(n for n in os.listdir(tmp) if n.startswith("zenbuild-spool-"))


def env_for(tmp: Path) -> Dict[str, str]:
    return {"TMPDIR": str(tmp)}  # tempfile.gettempdir(): the spools' folder


def make_project(project: Project, tmp_path: Path, pipe: str) -> Path:
    """The project with ``pipe`` and data/a.txt; the temp folder its runs get (returned)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", pipe)
    project.write("data/a.txt", "1")
    return tmp


def test_a_pool_never_closed_leaves_no_spool_and_its_reads_still_count(
        project: Project, tmp_path: Path) -> None:
    tmp = make_project(project, tmp_path, POOL)
    project.write("data/b.txt", "2")
    for run, b in enumerate(["2", "3", "4"]):
        project.write("data/b.txt", b)
        r = project.cli("run", env=env_for(tmp), timeout=60)
        assert f"VALUE 1+{b}+1" in r.output, r
        assert project.ticks() == ["pooled"], (run, r)  # the workers' read of data/b.txt
        assert spools(tmp) == [], (run, r)
    r = project.cli("run", "-j", "2", env=env_for(tmp), timeout=60)
    assert spools(tmp) == [], r


SPAWN = '''
import os

from zenbuild import pipeline, step
from ticker import tick


@step
def forked() -> int:
    tick("forked")
    pid = os.fork()
    if pid == 0:
        with open("data/a.txt") as f:
            f.read()
        os._exit(0)
    os.waitpid(pid, 0)
    return 1


@pipeline
def p():
    forked()
'''

# a root that is still running: it holds its lock (as forks._take_lock does), and says so
HOLDER = r'''
import fcntl, os, sys
tmp = sys.argv[1]
fd = os.open(os.path.join(tmp, f"zenbuild-spool-{os.getpid()}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
with open(os.path.join(tmp, f"zenbuild-spool-{os.getpid()}-7.jsonl"), "w") as f:
    f.write('["reads", "data/x.txt", null]\n')
print("ready", flush=True)
sys.stdin.read()
'''


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_spools_of_dead_roots_are_swept_and_live_ones_kept(
        project: Project, tmp_path: Path) -> None:
    tmp = make_project(project, tmp_path, SPAWN)
    d1, d2 = dead_pid(), dead_pid()
    line = '["reads", "data/x.txt", null]\n'
    (tmp / f"zenbuild-spool-{d1}-11.jsonl").write_text(line)  # an older zenbuild: no lock
    (tmp / f"zenbuild-spool-{d2}.lock").write_text("")  # a root killed outright
    (tmp / f"zenbuild-spool-{d2}-12.jsonl").write_text(line)
    (tmp / f"zenbuild-spool-{os.getpid()}-13.jsonl").write_text(line)  # a live pid, no lock
    (tmp / "zenbuild-spool-notes.txt").write_text("not a spool")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        r = project.cli("run", env=env_for(tmp), timeout=60)
        assert project.ticks() == ["forked"], r
        assert spools(tmp) == sorted([
            f"zenbuild-spool-{holder.pid}.lock", f"zenbuild-spool-{holder.pid}-7.jsonl",
            f"zenbuild-spool-{os.getpid()}-13.jsonl", "zenbuild-spool-notes.txt"]), r
        project.write("data/a.txt", "2")  # the forked child's read reached the step
        r = project.cli("run", env=env_for(tmp), timeout=60)
        assert project.ticks() == ["forked"], r
    finally:
        holder.communicate("", timeout=30)
    r = project.cli("run", env=env_for(tmp), timeout=60)  # cached: no fork, no sweep
    assert project.ticks() == [], r
    project.write("data/a.txt", "3")
    r = project.cli("run", env=env_for(tmp), timeout=60)  # the holder has exited: its lock
    assert project.ticks() == ["forked"], r  # is free, its files go
    assert spools(tmp) == sorted([f"zenbuild-spool-{os.getpid()}-13.jsonl",
                                  "zenbuild-spool-notes.txt"]), r
