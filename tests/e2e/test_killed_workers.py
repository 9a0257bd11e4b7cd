"""End-to-end: `zenbuild run -j 2` killed with SIGKILL (or by the OOM killer) takes its worker
processes with it. They used to live on forever (ppid 1, waiting on the task queue) holding an
inherited descriptor of the workspace lock, so every later run of the project waited for ever
for a "pid N" that was long dead."""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List

import pytest
from conftest import Project

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc to tell whether a worker is still alive")

# Each step writes its worker's pid beside the project (a file in the project would be an
# undeclared write), then waits for a file the test creates only after the kill. os.access:
# an existence check through os.stat would be recorded as the step's input.
PIPE = '''
import os
import time

from zenbuild import pipeline, step

OUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@step
def hold(i: int) -> int:
    path = os.path.join(OUT, f"started-{i}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    while not os.access(os.path.join(OUT, "go"), os.F_OK):
        time.sleep(0.01)
    return i


@pipeline
def p():
    hold(1, id="a")
    hold(2, id="b")
'''


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_and_kill(project: Project, env: Dict[str, str], how: str) -> List[int]:
    """Start `run -j 2`, wait until both steps are under way in their workers, SIGKILL the main
    process: the workers' pids."""
    out = project.root.parent
    proc = subprocess.Popen([sys.executable, "-m", "zenbuild", "run", "-j", "2",
                             "--project-dir", str(project.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    try:
        started = [out / "started-1", out / "started-2"]
        wait_for(lambda: all(p.exists() for p in started) or proc.poll() is not None, 120,
                 "both steps to start")
        assert proc.poll() is None, "the run ended before its steps were under way"
        workers = [int(p.read_text()) for p in started]
        assert proc.pid not in workers and len(set(workers)) == 2  # two worker processes
        for pid in workers:  # forked, or spawned as asked
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert (b"spawn_main" in f.read()) == (how == "spawn")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return workers


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_workers_die_with_a_killed_run_and_the_next_run_is_not_blocked(
        project: Project, tmp_path: Path, how: str) -> None:
    """fork: the default on Linux (workers forked from the single-threaded main process).
    spawn: what a run uses when another thread is alive (and on macOS)."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    env = {}
    if how == "spawn":  # a thread alive when the pool starts makes the workers spawned
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            "import threading\n"
            "threading.Thread(target=threading.Event().wait, daemon=True).start()\n")
        env = {"PYTHONPATH": os.pathsep.join(
            p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    workers = start_and_kill(project, env, how)
    try:
        wait_for(lambda: not any(alive(pid) for pid in workers), 30,
                 f"the workers {workers} to exit after their main process was killed")
        (tmp_path / "go").write_text("")  # a leftover worker would finish now, and wait again
        r = project.run("run", "-j", "2", timeout=60)
        assert sorted(r.executed) == ["a", "b"]
        assert "waiting for another zenbuild run" not in r.output
    finally:
        kill_all(workers)


def test_a_waiting_run_names_the_processes_that_hold_the_lock_of_a_dead_run(
        project: Project, tmp_path: Path) -> None:
    """However the lock came to outlive the run that took it (here: a process that inherited
    its descriptor), the waiting run says the recorded pid is gone and names the holder,
    then runs once that holder ends."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    (tmp_path / "go").write_text("")
    project.run("run")  # makes the store
    fd = os.open(project.root / ".zenbuild" / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    gone = subprocess.Popen(["true"])
    gone.wait()
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(gone.pid).encode(), 0)
    with subprocess.Popen(["sleep", "600"], pass_fds=[fd]) as holder:
        os.close(fd)
        try:
            with subprocess.Popen([sys.executable, "-m", "zenbuild", "run", "--project-dir",
                                   str(project.root)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "NO_COLOR": "1"}) as run:
                assert run.stdout is not None
                lines = queue.Queue()  # type: queue.Queue[str]
                threading.Thread(target=lambda: [lines.put(ln) for ln in run.stdout],
                                 daemon=True).start()
                try:
                    line = lines.get(timeout=60)
                    assert line.strip() == (
                        f"Warning: waiting for another zenbuild run (pid {gone.pid}, which is no "
                        f"longer running; the lock is held by pid {holder.pid} (sleep 600): "
                        "end it to go on) in this project to finish")
                    holder.kill()  # what the message says to do
                    assert run.wait(timeout=60) == 0
                finally:
                    run.kill()
        finally:
            holder.kill()
