"""End-to-end: `-j N` runs independent steps at once in worker processes; failures, --keep-going,
attributable output, the progress line, and two runs of one project at once (the store lock)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from typing import List

import pytest
from conftest import REPO, Project

# a and b each record when they started and ended, then wait (up to 30 s) for the other to have
# started: run one after the other, neither sees the other; run at once, both do.
# Steps wait on handshake files with os.access: zenbuild records os.stat-based existence
# checks (os.path.exists) as a step's inputs, and the handshake is test plumbing, not an input.
RENDEZVOUS = '''
import os
import time

from zenbuild import Output, pipeline, step
from ticker import tick

HERE = os.path.dirname(os.path.abspath(__file__))


def _mark(name, what):
    now = repr(time.time())  # taken before the file appears, which is renamed into place
    path = os.path.join(HERE, "times", f"{name}.{what}")
    with open(path + ".tmp", "w") as f:
        f.write(now)
    os.replace(path + ".tmp", path)


def _meet(me, other):
    os.makedirs(os.path.join(HERE, "times"), exist_ok=True)
    _mark(me, "start")
    print(f"{me} started in pid {os.getpid()}")
    deadline = time.time() + 30
    seen = False
    while time.time() < deadline:
        if os.access(os.path.join(HERE, "times", f"{other}.start"), os.F_OK):
            seen = True
            break
        time.sleep(0.01)
    print(f"{me} saw {other}: {seen}")
    _mark(me, "end")
    return {"step": me, "pid": os.getpid(), "saw_other": seen}


@step
def a() -> dict:
    tick("a")
    return _meet("a", "b")


@step
def b() -> dict:
    tick("b")
    return _meet("b", "a")


@step
def both(x: dict, y: dict, out: Output) -> list:
    tick("both")
    out.write_text(f"{x['saw_other']} {y['saw_other']}")
    return [x["pid"], y["pid"], os.getpid()]


@pipeline
def pair():
    both(a(), b(), Output("build/both.txt"))
'''


def times(p: Project, name: str) -> tuple:
    d = p.root / "times"
    return float((d / f"{name}.start").read_text()), float((d / f"{name}.end").read_text())


@pytest.mark.parametrize("how", ["flag", "config"])
def test_independent_steps_overlap(project: Project, how: str) -> None:
    project.write("pipe.py", RENDEZVOUS)
    toml = 'pipelines = ["pipe:pair"]\n' + ("jobs = 2\n" if how == "config" else "")
    project.write("zenbuild.toml", toml)
    r = project.run("run", *(["-j", "2"] if how == "flag" else []), "--json")
    a0, a1 = times(project, "a")
    b0, b1 = times(project, "b")
    assert a0 < b1 and b0 < a1  # the two intervals overlap
    assert project.read("build/both.txt") == "True True"
    assert sorted(project.ticks()) == ["a", "b", "both"]
    summary = json.loads(r.stdout)
    assert {s["name"]: s["status"] for s in summary["steps"]} == {
        "a": "executed", "b": "executed", "both": "executed"}
    # whole lines, each attributed to its step, printed by the main process
    for me, other in (("a", "b"), ("b", "a")):
        assert f"[{me}] {me} saw {other}: True" in r.stderr.splitlines()
    # (the steps write their times/ marks undeclared: zenbuild warns once per step about that)
    assert all(ln.startswith(("[a] ", "[b] ", "Step ", "3 executed", "Warning: step a wrote ",
                              "Warning: step b wrote "))
               for ln in r.stderr.splitlines()), r
    # the steps ran in worker processes, not in the CLI's own process
    pids = [int(ln.rsplit(" ", 1)[1]) for ln in r.stderr.splitlines() if "started in pid" in ln]
    assert len(set(pids)) == 2
    again = project.run("run", "-j", "2")
    assert again.executed == [] and sorted(again.cached) == ["a", "b", "both"]


FAILING = '''
import os
import time

from zenbuild import pipeline, step
from ticker import tick

HERE = os.path.dirname(os.path.abspath(__file__))


@step
def bad() -> int:
    tick("bad")
    return 1 // 0


@step
def slow() -> int:
    # Handshake: the test creates "release" once the main process has reported that bad
    # failed, so slow is still running when the scheduler learns of the failure.
    tick("slow")
    deadline = time.time() + 60
    while not os.access(os.path.join(HERE, "release"), os.F_OK):
        assert time.time() < deadline, "never released"
        time.sleep(0.01)
    return 2


@step
def later() -> int:
    tick("later")
    return 3


@step
def after_bad(x: int) -> int:
    tick("after_bad")
    return x


@pipeline
def failing():
    bad_value = bad()
    slow()
    later()
    after_bad(bad_value)
'''


def statuses(r) -> dict:  # type: ignore[no-untyped-def]
    return {s["name"]: s["status"] for s in json.loads(r.stdout)["steps"]}


class Finished:
    """What a CLI run started with Popen printed, and its exit code."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_failing(project: Project, *args: str) -> Finished:
    """Run FAILING with -j 2; once the CLI has printed that bad failed (so the scheduler has
    taken in the failure), let slow finish by creating the file it waits for. stderr is a
    terminal: there the console writes each line at once (into a pipe it may hold lines
    back until the next one, which would come only after slow)."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    master, slave = pty.openpty()
    out_path = project.root / "stdout.json"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zenbuild", "run", "-j", "2", *args, "--json",
             "--project-dir", str(project.root)],
            stdout=out, stderr=slave, env=env,
        )
    os.close(slave)
    chunks: List[bytes] = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if b"Step bad failed" in b"".join(chunks[-2:]):
                (project.root / "release").write_text("")
    finally:
        os.close(master)
        (project.root / "release").write_text("")  # never leave slow waiting
        returncode = proc.wait(timeout=120)
    err = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    assert "Step bad failed" in err, err
    return Finished(returncode, out_path.read_text(), err)


def test_failure_stops_scheduling_but_finishes_running_steps(project: Project) -> None:
    project.write("pipe.py", FAILING)
    project.write("zenbuild.toml", 'pipelines = ["pipe:failing"]\n')
    r = run_failing(project)
    assert r.returncode == 1, r.stderr
    assert statuses(r) == {"bad": "failed", "slow": "executed", "later": "skipped",
                           "after_bad": "skipped"}
    assert sorted(project.ticks()) == ["bad", "slow"]
    assert "ZeroDivisionError" in r.stderr and "return 1 // 0" in r.stderr


def test_keep_going_runs_every_independent_step(project: Project) -> None:
    project.write("pipe.py", FAILING)
    project.write("zenbuild.toml", 'pipelines = ["pipe:failing"]\n')
    r = run_failing(project, "--keep-going")
    assert r.returncode == 1, r.stderr
    assert statuses(r) == {"bad": "failed", "slow": "executed", "later": "executed",
                           "after_bad": "skipped"}
    assert sorted(project.ticks()) == ["bad", "later", "slow"]


def test_step_that_is_not_importable_fails_clearly(project: Project) -> None:
    project.write("pipe.py", '''
        from zenbuild import pipeline, step

        def make():
            @step
            def inner() -> int:
                return 1
            return inner

        inner = make()

        @pipeline
        def nested():
            inner()
    ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:nested"]\n')
    r = project.run("run", "-j", "2", check=1)
    assert "not a module-level function" in r.output and "-j 1" in r.output
    assert project.run("run").executed == ["inner"]  # serial, in-process: fine


def test_progress_line_shows_the_running_steps(project: Project) -> None:
    project.write("pipe.py", RENDEZVOUS)
    project.write("zenbuild.toml", 'pipelines = ["pipe:pair"]\n')
    master, slave = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "run", "-j", "2", "--project-dir", str(project.root)],
        stdout=subprocess.DEVNULL, stderr=slave, env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "running: a, b" in text or "running: b, a" in text, text


LOCKED = '''
import os
import time

from zenbuild import pipeline, step

HERE = os.path.dirname(os.path.abspath(__file__))


@step
def hold() -> int:
    open(os.path.join(HERE, "holding"), "w").close()
    while not os.access(os.path.join(HERE, "release"), os.F_OK):
        time.sleep(0.01)
    return 1


@pipeline
def locked():
    hold()
'''


def test_second_run_waits_or_fails_fast(project: Project) -> None:
    project.write("pipe.py", LOCKED)
    project.write("zenbuild.toml", 'pipelines = ["pipe:locked"]\n')
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("CI", None)
    cmd = [sys.executable, "-m", "zenbuild", "run", "--project-dir", str(project.root)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=str(REPO))
    try:
        deadline = time.time() + 60
        while not (project.root / "holding").exists():
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.01)
        r = project.run("run", "--no-wait", check=2)
        assert "another zenbuild run" in r.stderr and str(first.pid) in r.stderr
        r = project.run("cache", "gc", "--no-wait", check=2)  # maintenance respects the lock too
        assert "another zenbuild run" in r.stderr
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env, cwd=str(REPO))
        waiting = ""
        while "waiting for another zenbuild run" not in waiting:
            line = second.stderr.readline() if second.stderr else ""
            assert line, "the second run never said it was waiting"
            waiting += line
        assert second.poll() is None  # still waiting while the first holds the lock
        (project.root / "release").write_text("")
        out2, _ = second.communicate(timeout=60)
        assert second.returncode == 0
        assert "Using cached version of hold." in out2  # it ran after the first, on its result
    finally:
        (project.root / "release").write_text("")
        out1, err1 = first.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert "Step hold has finished" in out1


def test_a_worker_that_dies_fails_only_its_step(project: Project) -> None:
    project.write("pipe.py", '''
        import os

        from zenbuild import pipeline, step
        from ticker import tick


        @step
        def crash() -> int:
            tick("crash")
            os._exit(3)


        @step
        def fine(i: int) -> int:
            tick(f"fine{i}")
            return i


        @pipeline
        def dies():
            crash()
            for i in range(3):
                fine(i)
    ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:dies"]\n')
    r = project.run("run", "-j", "2", "--keep-going", "--json", check=1)
    st = statuses(r)
    assert st.pop("crash") == "failed"
    assert "step crash got no result: a worker process died" in r.stderr
    # a step running beside it in the broken pool may fail too; the pool restarts for the rest
    assert set(st.values()) <= {"executed", "failed"} and "executed" in st.values()
    again = statuses(project.run("run", "-j", "2", "--keep-going", "--json", check=1))
    assert again["crash"] == "failed"
    assert all(again[k] == "cached" for k, v in st.items() if v == "executed")  # results kept
