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


PLUGIN_PIPE = '''
import importlib

from zenbuild import File, pipeline, step
from ticker import tick


@step
def by_plugin(name: str = "alpha") -> str:
    tick("by_plugin")
    return importlib.import_module(f"plugins.{name}").make()


@step
def other(f) -> str:
    tick("other")
    return f.read_text()


@pipeline
def p():
    by_plugin()
    other(File("other.txt"))
'''


def test_code_reached_dynamically_is_watched_while_its_step_is_served(project: Project) -> None:
    """plugins/alpha.py is imported only by a rebuild that executes by_plugin; its entry's
    traced calls name it, so it is watched when watch starts on an up-to-date project and
    after a rebuild in which by_plugin was cached."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PLUGIN_PIPE)
    project.write("plugins/__init__.py", "")
    project.write("plugins/alpha.py", 'def make():\n    return "alpha-v1"\n')
    project.write("other.txt", "o1")
    project.cli("run")
    project.ticks()
    w = Watch(project, "-v")  # -v: the watched set is shown after every rebuild (ready())
    try:
        w.until(r"\d+ executed")  # all served: the plugin module is not imported
        w.ready()
        project.write("plugins/alpha.py", 'def make():\n    return "alpha-v2"\n')
        lines = w.rebuild()
        assert lines[0] == "changed: plugins/alpha.py", lines
        assert executed(lines) == ["by_plugin"], lines
        w.ready()
        project.write("other.txt", "o2")  # a rebuild in which by_plugin is served
        lines = w.rebuild()
        assert executed(lines) == ["other"], lines
        w.ready()
        project.write("plugins/alpha.py", 'def make():\n    return "alpha-v3"\n')
        lines = w.rebuild()
        assert lines[0] == "changed: plugins/alpha.py", lines
        assert executed(lines) == ["by_plugin"], lines
        assert project.ticks() == ["by_plugin", "other", "by_plugin"]
    finally:
        assert w.stop() == 0, "\n".join(w.log)
