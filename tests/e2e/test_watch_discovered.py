"""End-to-end: `zenbuild watch` also watches the files its steps read without declaring them
(their entries' discovered records): saving one starts a rebuild of the step that read it
(before, nothing happened until some other save)."""

from __future__ import annotations

from conftest import Project

from tests.e2e.test_watch import Watch, executed

PIPE = '''
import os

from zenbuild import pipeline, step
from ticker import tick


@step
def settings() -> str:
    tick("settings")
    with open(os.path.join(os.path.dirname(__file__), "extra.txt")) as f:  # not declared
        return f.read().strip()


@step
def use(s: str) -> str:
    tick("use")
    return s.upper()


@pipeline
def p():
    use(settings())
'''


def test_an_undeclared_read_is_watched(project: Project) -> None:
    project.write("pipe.py", PIPE)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("extra.txt", "one\n")
    w = Watch(project)
    try:
        assert "2 executed" in w.until(r"\d+ executed")[-1]
        w.ready()
        project.ticks()
        project.write("extra.txt", "two\n")
        lines = w.rebuild()
        assert lines[0] == "changed: extra.txt"
        assert executed(lines) == ["settings", "use"]
        assert project.ticks() == ["settings", "use"]
    finally:
        assert w.stop() == 0, "\n".join(w.log)
