"""End-to-end, issue 10 item 14: files a project module reads while it is imported
(``yaml.safe_load(open("params.yaml"))`` in config.py) are part of that module's fingerprint.
A step whose code touches the module reruns when such a file changes, and only such a step
(a module a module imports keeps its own reads); `status` and `explain` name the file; and
`zenbuild watch` rebuilds on a save of it."""

from __future__ import annotations

from conftest import Project

# Trainer.epochs is set by module-level code after the class statement, from a file read at
# import: both the file (an import read) and the class's live attribute tell the step reruns.
CONFIG = '''
from pathlib import Path

import yaml

import settings  # reads params.json while it is imported: its read, not config's


class Trainer:
    def fit(self):
        return f"epochs={self.epochs} limit={settings.Limits.top}"


Trainer.epochs = yaml.safe_load(open(Path(__file__).with_name("params.yaml")))["epochs"]
'''

SETTINGS = '''
import json
from pathlib import Path


class Limits:
    def show(self):
        return f"top={self.top}"


with open(Path(__file__).with_name("params.json")) as f:
    Limits.top = json.load(f)["top"]
'''

PIPE = '''
from zenbuild import Output, pipeline, step
from ticker import tick
from config import Trainer
import settings


@step
def train() -> str:
    tick("train")
    return Trainer().fit()


@step
def limits() -> str:
    tick("limits")
    return settings.Limits().show()


@step
def plain() -> int:
    tick("plain")
    return 1


@step
def report(t: str, lim: str, n: int, out: Output) -> None:
    tick("report")
    out.write_text(f"{t}|{lim}|{n}")


@pipeline
def p():
    report(train(), limits(), plain(), Output("build/out.txt"))
'''


def make(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    project.write("config.py", CONFIG)
    project.write("settings.py", SETTINGS)
    project.write("params.yaml", "epochs: 3\n")
    project.write("params.json", '{"top": 5}\n')
    first = project.run("run")
    assert sorted(first.executed) == ["limits", "plain", "report", "train"], first
    project.ticks()
    return project


def test_a_file_read_at_import_reruns_the_steps_using_that_module(project: Project) -> None:
    make(project)
    noop = project.run("run")
    assert noop.executed == [] and project.ticks() == [], noop

    project.write("params.yaml", "epochs: 7\n")
    st = project.run("status")
    # status names one reason: the class's live attribute (epochs) comes first, then "+1 more"
    assert "code: class config.Trainer (config.py) changed (+1 more)" in st.stdout, st
    assert [ln.split()[1] for ln in st.stdout.splitlines()
            if ln.startswith("  ") and ln.split()[0] == "train"] == ["stale"], st
    ex = project.run("explain", "train")
    assert "code: file params.yaml (read when config.py is imported) changed" in ex.stdout, ex
    assert "code: class config.Trainer (config.py) changed" in ex.stdout, ex
    again = project.run("run")
    # config.py imports settings, but settings' own read (params.json) did not change, and
    # neither limits nor plain touch config.py
    assert again.executed == ["train", "report"], again
    assert sorted(again.cached) == ["limits", "plain"], again
    assert sorted(project.ticks()) == ["report", "train"]
    assert project.read("build/out.txt") == "epochs=7 limit=5|top=5|1"


def test_a_read_belongs_to_the_innermost_module_being_imported(project: Project) -> None:
    make(project)
    project.write("params.json", '{"top": 9}\n')
    ex = project.run("explain", "limits")
    assert "code: file params.json (read when settings.py is imported) changed" in ex.stdout, ex
    # train reaches settings.Limits too (fit() names settings): the same item, not one for
    # config.py, which imports settings but did not read params.json itself
    ex = project.run("explain", "train")
    assert "params.json (read when settings.py is imported) changed" in ex.stdout, ex
    assert "read when config.py" not in ex.stdout, ex
    run = project.run("run")
    assert sorted(run.executed) == ["limits", "report", "train"], run
    assert run.cached == ["plain"], run
    assert project.read("build/out.txt") == "epochs=3 limit=9|top=9|1"


def test_a_file_read_at_import_that_is_reverted_is_served_from_the_store(project: Project) -> None:
    make(project)
    project.write("params.yaml", "epochs: 8\n")
    assert project.run("run").executed == ["train", "report"]
    project.write("params.yaml", "epochs: 3\n")
    back = project.run("run")
    assert back.executed == [] and sorted(back.cached) == ["limits", "plain", "report", "train"]
    assert project.read("build/out.txt") == "epochs=3 limit=5|top=5|1"


def test_watch_rebuilds_when_a_file_read_at_import_is_saved(project: Project) -> None:
    from e2e.test_watch import SUMMARY, Watch, executed

    make(project)
    w = Watch(project)
    try:
        first = w.until(SUMMARY.pattern)
        assert executed(first) == [], first  # everything is cached from make()
        w.until(r"^watching \d+ files? in \d+ folders?")
        project.write("params.yaml", "epochs: 11\n")
        lines = w.rebuild()
        assert lines[0] == "changed: params.yaml", lines
        assert executed(lines) == ["train", "report"], lines
        assert project.read("build/out.txt") == "epochs=11 limit=5|top=5|1"
    finally:
        assert w.stop() == 0, "\n".join(w.log)
