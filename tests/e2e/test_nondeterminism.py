"""End-to-end, issue 11: a step that executes again with exactly the key of its stored entry and
returns a different value (datetime.now()) gets one warning, and the mark is kept on its entry,
so `explain` and `status` say it is not deterministic; a deterministic step is never marked."""

from __future__ import annotations

import json

from conftest import Project

PIPE = '''
import datetime

from zenbuild import pipeline, step
from ticker import tick


@step
def stamp() -> str:
    tick("stamp")
    return datetime.datetime.now().isoformat()


@step
def fixed() -> int:
    tick("fixed")
    return 42


@step
def show(s: str, n: int) -> str:
    tick("show")
    return f"{s} {n}"


@pipeline
def p():
    show(stamp(), fixed())
'''

MARK = "not deterministic: the last two runs with the same inputs returned different values"


def test_a_step_returning_the_time_is_marked_for_explain_and_status(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    first = project.run("run")
    assert sorted(first.executed) == ["fixed", "show", "stamp"], first
    assert "not deterministic" not in first.output
    assert MARK not in project.run("explain", "stamp").stdout  # one run proves nothing

    again = project.run("run", "--no-cache")
    assert sorted(again.executed) == ["fixed", "show", "stamp"], again
    warnings = [ln for ln in again.output.splitlines() if "is not deterministic" in ln]
    assert warnings == ["Warning: step stamp is not deterministic: it ran again with the same "
                        "code and inputs and returned a different value; seed it or mark it "
                        "@no_cache"], again.output

    ex = project.run("explain", "stamp")
    assert ex.stdout.startswith("step stamp (pipeline p): up to date"), ex
    assert MARK in ex.stdout, ex
    assert MARK not in project.run("explain", "fixed").stdout
    assert MARK not in project.run("explain", "show").stdout  # its input changed: no mark
    doc = json.loads(project.run("explain", "stamp", "--json").stdout)
    assert doc["not_deterministic"] is True
    assert json.loads(project.run("explain", "fixed", "--json").stdout)["not_deterministic"] is False

    st = project.run("status").stdout.splitlines()
    row = next(i for i, ln in enumerate(st) if ln.split()[:1] == ["stamp"])
    assert MARK in st[row + 1] and st[row + 1].startswith("  "), st
    assert sum(MARK in ln for ln in st) == 1, st  # only stamp

    # served from the cache, the step keeps its mark; nothing executes
    noop = project.run("run")
    assert noop.executed == [], noop
    assert MARK in project.run("explain", "stamp").stdout


def test_a_deterministic_rerun_clears_nothing_and_marks_nothing(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE.replace("datetime.datetime.now().isoformat()", '"noon"'))
    project.run("run")
    again = project.run("run", "--no-cache")
    assert sorted(again.executed) == ["fixed", "show", "stamp"], again
    assert "not deterministic" not in again.output
    assert "not deterministic" not in project.run("status").stdout
    assert "not deterministic" not in project.run("explain", "stamp").stdout
