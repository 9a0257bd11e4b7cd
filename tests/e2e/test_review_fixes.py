"""End-to-end: fixes from a new-user review, through the real CLI: the [steps.NAME] typo check
against the traced pipeline's real names, TOML dates as params and config fields, a damaged
.zenbuild/secret.key, and API / selection mistakes worded for where they were made."""

from __future__ import annotations

import os

import pytest

SECRET_PIPE = '''
from zenbuild import step, pipeline, Env, Output
from ticker import tick


@step
def call_api(token: str) -> int:
    tick("call_api")
    return len(token)


@step
def report(n: int, out: Output) -> None:
    tick("report")
    out.write_text(str(n))


@pipeline
def api():
    report(call_api(Env("ZB_TEST_TOKEN", secret=True)), Output("build/report.txt"))
'''


def _user_error(r, *parts: str) -> None:
    """Exit 2, one paragraph with every part, no traceback."""
    assert r.returncode == 2, r
    for p in parts:
        assert p in r.output, r
    assert "Traceback" not in r.output, r


@pytest.mark.parametrize("damage", ["short", "long", "folder"])
def test_a_damaged_secret_key_is_a_clear_error_and_deleting_it_recovers(project, damage):
    project.write("zenbuild.toml", 'pipelines = ["pipe:api"]\n')
    project.write("pipe.py", SECRET_PIPE)
    env = {"ZB_TEST_TOKEN": "hunter2"}
    assert project.run("run", env=env).executed == ["call_api", "report"]
    key = project.root / ".zenbuild" / "secret.key"
    assert len(key.read_bytes()) == 32
    key.unlink()
    if damage == "folder":
        key.mkdir()
        what = "is a folder"
    else:
        key.write_bytes(b"abc" if damage == "short" else os.urandom(40))
        what = "is damaged"
    project.ticks()
    r = project.run("run", env=env, check=None)
    _user_error(r, str(key), what, "Delete", "every step that takes a secret Env then executes once")
    assert project.ticks() == []
    if damage == "folder":
        key.rmdir()
    else:
        key.unlink()
    r = project.run("run", env=env)
    assert r.executed == ["call_api"] and project.ticks() == ["call_api"]  # report: cut off
    assert project.run("run", env=env).executed == []
