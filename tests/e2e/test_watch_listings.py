"""End-to-end: `zenbuild watch` watches the folders its steps listed (their entries' discovered
records) and its Dir inputs: a new, removed or renamed entry that changes what a step's
listing shows starts a rebuild of that step; a file its pattern does not match starts none.

"Starts none" is shown without waiting for nothing: the file that must not count is written
first and a file that does count after it; events arrive in order, so the rebuild's
``changed:`` header names every file that counted since the last rebuild."""

from __future__ import annotations

import os

from conftest import Project

from tests.e2e.test_watch import Watch, executed

PIPE = '''
import glob
import os

from zenbuild import Dir, pipeline, step
from ticker import tick

HERE = os.path.dirname(os.path.abspath(__file__))


@step
def csvs() -> list:
    tick("csvs")
    return [os.path.basename(p) for p in sorted(glob.glob(os.path.join(HERE, "data", "*.csv")))]


@step
def deep() -> list:
    tick("deep")
    return sorted(glob.glob("**/*.csv", root_dir=os.path.join(HERE, "tree"), recursive=True))


@step
def everything() -> list:
    tick("everything")
    return sorted(n for n in os.listdir(os.path.join(HERE, "raw")) if n.endswith(".csv"))


@step
def declared(d: Dir) -> list:
    tick("declared")
    return sorted(p.name for p in d.glob("*.csv"))


@pipeline
def p():
    csvs()
    deep()
    everything()
    declared(Dir("inbox", glob="*.csv"))
'''


def make(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE)
    for rel in ("data/a.csv", "tree/sub/a.csv", "raw/a.csv", "inbox/a.csv"):
        project.write(rel, "1\n")
    return project


def test_a_new_entry_in_a_listed_folder_rebuilds_exactly_its_step(project: Project) -> None:
    make(project)
    w = Watch(project)
    try:
        assert sorted(executed(w.until(r"\d+ executed"))) == ["csvs", "declared", "deep",
                                                               "everything"]
        w.ready()
        project.ticks()
        # none of these changes what a step could see through its pattern
        project.write("data/notes.txt", "x\n")
        project.write("inbox/notes.txt", "x\n")
        project.write("tree/sub/notes.txt", "x\n")
        project.write("data/a.csv", "2\n")  # content, not a name: no one read it
        # a listing of everything sees any new name (the step filters it itself)
        project.write("raw/notes.txt", "x\n")
        lines = w.rebuild()
        assert lines[0] == "changed: raw/notes.txt", w.log
        assert executed(lines) == ["everything"]
        project.write("data/b.csv", "1\n")
        lines = w.rebuild()
        assert lines[0] == "changed: data/b.csv", w.log
        assert executed(lines) == ["csvs"]
        project.write("tree/sub/new/deeper/b.csv", "1\n")  # in folders made after the start
        lines = w.rebuild()
        # (its new folders may be named too: when their events are looked at, the file that
        # changes the pattern's matches can already be in them)
        assert lines[0].endswith("tree/sub/new/deeper/b.csv"), w.log
        assert executed(lines) == ["deep"]
        project.write("inbox/b.csv", "1\n")  # a Dir input's matching file
        lines = w.rebuild()
        assert lines[0] == "changed: inbox/b.csv", w.log
        assert executed(lines) == ["declared"]
        os.rename(project.root / "data" / "b.csv", project.root / "data" / "c.csv")
        lines = w.rebuild()
        assert "data/c.csv" in lines[0], w.log
        assert executed(lines) == ["csvs"]
        (project.root / "tree" / "sub" / "a.csv").unlink()
        lines = w.rebuild()
        assert lines[0] == "changed: tree/sub/a.csv", w.log
        assert executed(lines) == ["deep"]
        assert sorted(project.ticks()) == ["csvs", "csvs", "declared", "deep", "deep",
                                           "everything"]
    finally:
        assert w.stop() == 0, "\n".join(w.log)
