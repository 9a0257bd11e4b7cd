"""End-to-end, issue 10 item 7: the code that ran must be the code that was fingerprinted. A
helper saved while a run is in progress (watch mode during a long training step) must not get
the old code's result cached under the new code's fingerprint: the result is used, not cached,
with a warning naming the file, and the next run executes the step again with the new code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from conftest import REPO, Project

PIPE = '''
import os
import time

from zenbuild import Output, pipeline, step
from ticker import tick
import helpers


@step
def slow() -> int:
    tick("slow")
    hs = os.environ.get("ZENBUILD_TEST_HANDSHAKE")  # a folder outside the project
    if hs:
        open(os.path.join(hs, "started"), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(hs, "release")):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never released the step")
            time.sleep(0.01)
    return 1


@step
def use(n: int) -> str:
    tick("use")
    return helpers.value(n)


@step
def other() -> int:
    tick("other")
    return 2


@step
def report(v: str, o: int, out: Output) -> None:
    tick("report")
    out.write_text(f"{v}|{o}")


@pipeline
def p():
    report(use(slow()), other(), Output("build/out.txt"))
'''

OLD = 'def value(n):\n    return f"old {n}"\n'
NEW = 'def value(n):\n    return f"new {n}"\n'


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, _ = proc.communicate()
            raise AssertionError(f"the run ended before {path.name}:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} within {timeout}s")
        time.sleep(0.01)


def released_run(project: Project, tmp_path: Path, during: Callable[[], object]) -> str:
    """`zenbuild run` with step slow held until ``during()`` is done; its merged output."""
    hs = tmp_path / "handshake"
    hs.mkdir()
    env = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(REPO),
               ZENBUILD_TEST_HANDSHAKE=str(hs))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "run", "--project-dir", str(project.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(hs / "started", proc)
        during()
        (hs / "release").touch()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    return out


def make(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.write("helpers.py", OLD)


def test_a_helper_saved_during_the_run_is_not_cached_and_reruns_next_time(
        project: Project, tmp_path: Path) -> None:
    make(project)
    # helpers.py is imported when the run begins; `use` is fingerprinted after `slow` ends,
    # from the file on disk (the new code), while the old code is what runs
    out = released_run(project, tmp_path, lambda: project.write("helpers.py", NEW))
    assert project.read("build/out.txt") == "old 1|2"  # what ran was the imported code
    assert ("Warning: source helpers.py changed while the run was in progress (step use ran the "
            "code imported before); its result was used but not cached") in out, out
    assert out.count("changed while the run was in progress") == 1, out  # only use's code
    assert sorted(project.ticks()) == ["other", "report", "slow", "use"]

    again = project.run("run")
    assert again.executed == ["use", "report"], again
    assert sorted(again.cached) == ["other", "slow"], again
    assert project.read("build/out.txt") == "new 1|2"
    assert sorted(project.ticks()) == ["report", "use"]

    noop = project.run("run")
    assert noop.executed == [] and project.ticks() == [], noop


def test_a_helper_touched_during_the_run_is_cached_as_usual(
        project: Project, tmp_path: Path) -> None:
    make(project)
    # same bytes, another mtime: the stat moved, and the digest says nothing changed
    out = released_run(project, tmp_path,
                       lambda: os.utime(project.root / "helpers.py", (1, 1)))
    assert "changed while the run was in progress" not in out, out
    assert sorted(project.ticks()) == ["other", "report", "slow", "use"]
    served = project.run("run")
    assert served.executed == [] and project.ticks() == [], served
