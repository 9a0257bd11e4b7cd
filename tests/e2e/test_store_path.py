"""`store = ...` (and the default .zenbuild) must name a zenbuild store, a new folder or an empty
one: zenbuild deletes what it takes for its own in its store (STORE/tmp/PID-* of runs no longer
running, STORE/cas/ on `cache clear`), so a folder of the user's adopted as a store lost files
without a word, and `store = "/"` wrote /zenbuild.db. Every command refuses such a folder
(exit 2, one paragraph naming it); stores made by earlier versions, and a store whose first
command stopped before its database, are still used."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import Project
from zenbuild.config import load_config, store_problem
from zenbuild.errors import ConfigError

PIPE = """\
    from zenbuild import step, pipeline
    from ticker import tick

    @step
    def x() -> int:
        tick("x")
        return 1

    @pipeline
    def p():
        x()
    """

COMMANDS = [("run",), ("status",), ("explain", "x"), ("graph",), ("runs",), ("cache", "info"),
            ("cache", "clear"), ("cache", "verify"), ("cache", "gc")]


def setup(project: Project, store: str = "") -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n'
                  + (f"store = {store!r}\n".replace("'", '"') if store else ""))
    project.write("pipe.py", PIPE)


def users_folder(folder: Path) -> None:
    """The user report's folder: a notes file named like a killed run's temp file, in tmp/, a
    file under cas/ (what `cache clear` emptied) and a readme."""
    (folder / "tmp").mkdir(parents=True)
    (folder / "tmp" / "1234567-notes.txt").write_text("my notes")
    (folder / "cas" / "ab").mkdir(parents=True)
    (folder / "cas" / "ab" / "mine.txt").write_text("mine")
    (folder / "readme.txt").write_text("keep")


def contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_a_users_folder_as_store_is_refused_by_every_command(project: Project,
                                                              command: tuple) -> None:
    setup(project, "mydata")
    users_folder(project.root / "mydata")
    before = contents(project.root / "mydata")
    r = project.run(*command, check=2)
    assert "Traceback" not in r.output
    err = r.stderr.strip()
    assert err.count("\n") == 0  # one paragraph
    assert f"{project.root / 'mydata'} already exists and is not a zenbuild store" in err
    assert "zenbuild.toml:2: store:" in err  # the line to change
    assert "readme.txt" in err and "new or empty folder" in err
    assert contents(project.root / "mydata") == before  # nothing deleted, nothing written
    assert sorted(os.listdir(project.root / "mydata")) == ["cas", "readme.txt", "tmp"]
    assert project.ticks() == []


def test_the_default_store_folder_follows_the_same_rule(project: Project) -> None:
    setup(project)
    users_folder(project.root / ".zenbuild")
    r = project.run("run", check=2)
    assert ".zenbuild already exists and is not a zenbuild store" in r.stderr
    assert "Move that folder away" in r.stderr
    assert (project.root / ".zenbuild" / "tmp" / "1234567-notes.txt").read_text() == "my notes"
    assert not (project.root / ".zenbuild" / "zenbuild.db").exists()
    assert not (project.root / ".zenbuild" / "config-cache.json").exists()


# (`store = "/"` through the CLI is test_load_config_refuses_slash: without the fix, a run
# would write /zenbuild.db and sweep the system's /tmp)
@pytest.mark.parametrize("store", [".", "..", "./sub/.."])
def test_the_root_or_a_folder_above_it_is_refused(project: Project, store: str) -> None:
    setup(project, store)
    (project.root / "tmp").mkdir()
    (project.root / "tmp" / "1234567-notes.txt").write_text("my notes")
    r = project.run("run", check=2)
    assert "Traceback" not in r.output and r.stderr.strip().count("\n") == 0
    assert "project root" in r.stderr and "a folder of its own" in r.stderr
    assert not (project.root / "zenbuild.db").exists() and not (project.root / "cas").exists()
    assert not (project.root.parent / "zenbuild.db").exists()
    assert project.read("tmp/1234567-notes.txt") == "my notes"


def test_a_store_path_that_is_a_file_is_refused(project: Project) -> None:
    setup(project, "notes.txt")
    project.write("notes.txt", "mine")
    r = project.run("run", check=2)
    assert "is a file, not a folder" in r.stderr
    assert project.read("notes.txt") == "mine"


def test_new_empty_and_existing_stores_are_used(project: Project, tmp_path: Path) -> None:
    setup(project, "mydata")
    assert project.run("run").executed == ["x"]  # a new folder
    assert project.run("run").cached == ["x"]  # its own store: zenbuild.db
    (project.root / "mydata" / "mine.txt").write_text("a note beside the database")
    assert project.run("run").cached == ["x"]  # a store the user added a file to: still one
    outside = tmp_path / "empty"
    outside.mkdir()
    setup(project, str(outside))  # an empty folder outside the project
    assert project.run("run").executed == ["x"]
    assert (outside / "zenbuild.db").exists()


def test_a_store_of_an_earlier_version_is_kept(project: Project) -> None:
    """A store an earlier zenbuild made (schema 5, its tmp/ holding a killed run's temp file):
    recognised by its zenbuild.db, migrated and used; the killed run's temp file is swept."""
    import sqlite3

    from zenbuild.store.schema import SCHEMA

    setup(project, "oldstore")
    store = project.root / "oldstore"
    (store / "tmp").mkdir(parents=True)
    (store / "cas").mkdir()
    db = sqlite3.connect(store / "zenbuild.db")
    try:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('schema_version', '5')")
        db.commit()
    finally:
        db.close()
    dead = store / "tmp" / "999999999-0123456789abcdef"
    dead.write_bytes(b"partial blob")
    assert project.run("run").executed == ["x"]
    assert project.run("run").cached == ["x"]
    assert not dead.exists()


def test_a_store_whose_first_command_stopped_before_its_database(project: Project) -> None:
    """What zenbuild writes into a new store folder before zenbuild.db (compiled sources, the
    parsed config, a lock, empty cas/ and tmp/) is not the user's: the next command uses it."""
    setup(project)
    project.write("pipe.py", PIPE + "    raise ValueError('body')\n")
    project.run("run", check=2)  # the module was imported (compiled into pycode/), then failed
    store = project.root / ".zenbuild"
    assert os.listdir(store) and not (store / "zenbuild.db").exists()
    (store / "cas").mkdir()
    (store / "tmp").mkdir()
    (store / "lock").write_text("12345")
    project.write("pipe.py", PIPE)
    assert project.run("run").executed == ["x"]


# -- store_problem / load_config on their own -------------------------------------------------
def test_store_problem(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    assert store_problem(str(root / "absent"), str(root)) is None
    assert store_problem(str(root / "sub"), str(root)) is None  # empty
    assert "project root" in (store_problem(str(root), str(root)) or "")
    assert "above the project root" in (store_problem(str(tmp_path), str(root)) or "")
    assert "above the project root" in (store_problem("/", str(root)) or "")
    link = tmp_path / "link-to-root"
    link.symlink_to(root)
    assert "project root" in (store_problem(str(link), str(root)) or "")  # by its real path
    (root / "sub" / "pycode").mkdir()
    (root / "sub" / "pycode" / ("0" * 32)).write_bytes(b"code")
    (root / "sub" / "config-cache.json").write_text("{}")
    (root / "sub" / "secret.key").write_bytes(os.urandom(32))
    assert store_problem(str(root / "sub"), str(root)) is None
    (root / "sub" / "pycode" / "notes.txt").write_text("mine")
    assert "holds pycode" in (store_problem(str(root / "sub"), str(root)) or "")
    (root / "sub" / "zenbuild.db").write_bytes(b"")
    assert store_problem(str(root / "sub"), str(root)) is None  # a store: its database says
    lock_only = tmp_path / "lock-only"
    lock_only.mkdir()
    (lock_only / "lock").write_text("my lock notes")
    assert "holds lock" in (store_problem(str(lock_only), str(root)) or "")


def test_load_config_refuses_slash(tmp_path: Path) -> None:
    src = tmp_path / "zenbuild.toml"
    src.write_text('pipelines = ["a:p"]\nstore = "/"\n')
    with pytest.raises(ConfigError, match=r"zenbuild.toml:2: store: the store / is a folder "
                                          r"above the project root"):
        load_config(str(tmp_path), str(src))


def test_load_config_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1")
    src = tmp_path / "zenbuild.toml"
    src.write_text('pipelines = ["a:p"]\n\nstore = "data"\n')
    with pytest.raises(ConfigError, match=r"zenbuild.toml:3: store: the store .*data already"):
        load_config(str(tmp_path), str(src))
    shutil.rmtree(tmp_path / "data")
    assert load_config(str(tmp_path), str(src)).store == str(tmp_path / "data")
