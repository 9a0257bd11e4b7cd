"""End-to-end: a run killed with SIGKILL does not stay "running" in the history forever: the
next run (runs of one store hold its lock, one at a time) marks it interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import Project

PIPE = '''
import os, time
from pathlib import Path
from zenbuild import step, pipeline


@step
def slow() -> int:
    here = Path(__file__).parent
    (here / "started").write_text(str(os.getpid()))  # the handshake: the test may kill now
    while not (here / "never").exists():
        time.sleep(0.01)
    return 1


@pipeline
def main():
    slow()
'''


def test_a_killed_run_is_marked_interrupted_by_the_next(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:main"]\n')
    project.write("pipe.py", PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "zenbuild", "run", "--project-dir",
                             str(project.root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (project.root / "started").exists():  # wait for the step to be under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [killed] = json.loads(project.run("runs", "--json").stdout)
    assert killed["status"] == "running"  # nothing could say otherwise yet
    (project.root / "never").write_text("")  # now the step finishes at once
    project.run("run")
    runs = json.loads(project.run("runs", "--json").stdout)
    assert [(r["id"], r["status"]) for r in runs] == [(runs[0]["id"], "succeeded"),
                                                      (killed["id"], "interrupted")]
