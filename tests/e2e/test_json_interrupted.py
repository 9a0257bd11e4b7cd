"""End-to-end: `zenbuild run --json` prints one JSON object on stdout even when the run is
interrupted (Ctrl-C, or SIGTERM from a cancelled CI job), so `run --json | python -m json.tool`
always parses (it printed nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import Project

PIPE = '''
import sys, time
from zenbuild import pipeline, step


@step
def slow() -> int:
    print("SLOW-RUNNING", file=sys.stderr, flush=True)
    time.sleep(120)  # until the test signals the run (never reached to its end)
    return 1


@pipeline
def p():
    slow()
'''


@pytest.mark.parametrize("sig,code,kind", [(signal.SIGINT, 130, "KeyboardInterrupt"),
                                           (signal.SIGTERM, 143, "Terminated")])
def test_an_interrupted_json_run_still_prints_its_object(project: Project, sig: int, code: int,
                                                        kind: str) -> None:
    project.write("pipe.py", PIPE)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "run", "--json", "--project-dir", str(project.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1"})
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:  # the step's own output goes to stderr under --json
        if "SLOW-RUNNING" in line:
            break
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code
    data = json.loads(out)  # exactly one object, nothing else on stdout
    assert data["status"] == "interrupted" and data["exit_code"] == code
    assert data["error"]["type"] == kind
