"""End-to-end: `zenbuild run --json | python -m json.tool` works for scripts: step output goes
to stderr (serially and with -j), a failed step carries its error, a usage error is JSON too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest
from conftest import Project

PIPE = '''
from zenbuild import pipeline, step
from ticker import tick


@step
def chatty() -> int:
    tick("chatty")
    print("a line a step prints")
    return 1


@step
def fragile(n: int, fail: bool) -> int:
    tick("fragile")
    if fail:
        raise ValueError(f"bad value {n}")
    return n


@pipeline
def demo(fail: bool = False):
    fragile(chatty(), fail)
'''


@pytest.fixture
def demo(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n')
    project.write("pipe.py", PIPE)
    return project


def _piped(p: Project, *args: str) -> Dict[str, Any]:
    """`zenbuild run --json ARGS | python -m json.tool`, through a real pipe."""
    env = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    zb = subprocess.Popen([sys.executable, "-m", "zenbuild", "run", "--json", *args,
                           "--project-dir", str(p.root)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env)
    tool = subprocess.run([sys.executable, "-m", "json.tool"], stdin=zb.stdout,
                          capture_output=True, text=True, timeout=120)
    assert zb.stdout is not None and zb.stderr is not None
    zb.stdout.close()
    with zb.stderr:
        err = zb.stderr.read().decode()
    zb.wait(120)
    assert tool.returncode == 0, f"json.tool: {tool.stderr}\nzenbuild stderr: {err}"
    data = json.loads(tool.stdout)
    data["_exit"], data["_stderr"] = zb.returncode, err
    return data


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]])
def test_step_output_goes_to_stderr_and_the_json_alone_to_stdout(demo: Project,
                                                                 jobs: List[str]) -> None:
    data = _piped(demo, *jobs)
    assert data["_exit"] == 0
    assert data["status"] == "succeeded"
    assert [(s["name"], s["status"]) for s in data["steps"]] == [("chatty", "executed"),
                                                                 ("fragile", "executed")]
    assert "a line a step prints" in data["_stderr"]
    assert sorted(demo.ticks()) == ["chatty", "fragile"]


def test_a_failed_step_carries_its_error_type_message_and_traceback(demo: Project) -> None:
    data = _piped(demo, "--param", "fail=true")
    assert data["_exit"] == 1 and data["status"] == "failed"
    failed = [s for s in data["steps"] if s["status"] == "failed"]
    assert [s["name"] for s in failed] == ["fragile"]
    error = failed[0]["error"]
    assert error["type"] == "ValueError" and error["message"] == "bad value 1"
    assert 'pipe.py", line' in error["traceback"] and "raise ValueError" in error["traceback"]
    assert "zenbuild" + os.sep + "executors" not in error["traceback"]


def test_a_usage_error_is_a_json_object_on_stdout(demo: Project) -> None:
    data = _piped(demo, "--param", "no_such=1")
    assert data["_exit"] == 2 and data["status"] == "error" and data["exit_code"] == 2
    assert data["error"]["type"] == "ParamError"
    assert "no parameter 'no_such'" in data["error"]["message"]
    assert "Error: --param no_such" in data["_stderr"]  # people still read stderr
    assert demo.ticks() == []


def test_a_pipeline_body_error_is_json_with_its_file_and_line(demo: Project) -> None:
    demo.write("pipe.py", PIPE.replace("    fragile(chatty(), fail)", "    fragile(chatty(), failz)"))
    data = _piped(demo)
    assert data["_exit"] == 2 and data["status"] == "error"
    err = data["error"]
    assert err["error_type"] == "NameError" and err["file"].endswith("pipe.py") and err["line"] == 23
    assert "NameError" in err["traceback"]


def test_a_click_usage_error_is_json_too(demo: Project) -> None:
    data = _piped(demo, "--no-such-flag")
    assert data["_exit"] == 2 and data["status"] == "error"
    assert "no-such-flag" in data["error"]["message"]


def test_dry_run_json_carries_each_steps_reasons_as_records(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
from zenbuild import step, pipeline


@step
def a(n: int = 1) -> int:
    return n


@step
def b(x: int) -> int:
    return x + 1


@pipeline
def p(n: int = 1):
    b(a(n))
''')
    r = project.run("run", "--dry-run", "--json")
    out = json.loads(r.stdout)
    kinds = {s["name"]: [x["kind"] for x in s["reasons"]] for s in out["steps"]}
    assert kinds == {"a": ["never_built"], "b": ["upstream_pending"]}, out
    project.run("run")
    r = project.run("run", "--dry-run", "--json", "--param", "n=2")
    steps = {s["name"]: s for s in json.loads(r.stdout)["steps"]}
    (rec,) = steps["a"]["reasons"]
    assert (rec["kind"], rec["subject"], rec["before"], rec["after"]) == \
        ("param_changed", "n", "1", "2"), rec
    assert rec["text"] == "param n: 1 -> 2"
