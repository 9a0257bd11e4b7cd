"""End-to-end: outputs never destroy the user's work, and a killed run's leftovers go."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import Project

PIPE = '''
from zenbuild import Dir, Output, pipeline, step
from ticker import tick


@step
def table(out: Output) -> None:
    tick("table")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("a,b\\n1,2\\n")


@step
def folder(out: Output) -> None:
    tick("folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "one.txt").write_text("one")


@step
def listing(d: Dir) -> list:
    tick("listing")
    return sorted(p.name for p in d.iterdir())


@pipeline
def safe():
    table(Output("OUT_FILE"))
    folder(Output("OUT_DIR"))
    listing(Dir("build"))
'''


def setup(project: Project, out_file: str = "data/table.csv", out_dir: str = "build/folder",
          store: str = "") -> None:
    project.write("pipe.py", PIPE.replace("OUT_FILE", out_file).replace("OUT_DIR", out_dir))
    project.write("zenbuild.toml", 'pipelines = ["pipe:safe"]\n'
                  + (f'store = "{store}"\n' if store else ""))


def trash_files(project: Project) -> list:
    base = project.root / ".zenbuild" / "trash"
    return sorted(p.relative_to(base).as_posix().split("/", 1)[1]
                  for p in base.rglob("*") if p.is_file()) if base.exists() else []


def test_an_existing_user_file_is_never_adopted_as_an_output(project: Project) -> None:
    setup(project)
    project.write("data/table.csv", "the user's own data\n")
    r = project.run("run", check=2)
    assert "Output('data/table.csv') of step table already exists" in r.stderr
    assert "a file" in r.stderr and "Move it away" in r.stderr and "Traceback" not in r.output
    assert project.read("data/table.csv") == "the user's own data\n"
    assert "table" not in project.ticks()
    (project.root / "data" / "table.csv").unlink()
    assert sorted(project.run("run").executed) == ["folder", "listing", "table"]


def test_a_users_dangling_link_at_an_output_is_refused_and_named_as_a_link(
        project: Project) -> None:
    """It was refused, but called "a file"."""
    setup(project)
    (project.root / "data").mkdir()
    os.symlink("nowhere.csv", project.root / "data" / "table.csv")
    r = project.run("run", check=2)
    assert "data/table.csv is a symbolic link to 'nowhere.csv'" in r.stderr, r
    assert os.readlink(project.root / "data" / "table.csv") == "nowhere.csv"


def test_a_folder_holding_user_files_is_never_adopted(project: Project) -> None:
    setup(project, out_file="table.csv", out_dir="data")
    project.write("data/raw.csv", "precious\n")
    r = project.run("run", check=2)
    assert "Output('data') of step folder already exists" in r.stderr
    assert "raw.csv" in r.stderr
    assert project.read("data/raw.csv") == "precious\n"


def test_an_empty_folder_and_a_partial_output_of_a_killed_first_run_are_adopted(
        project: Project) -> None:
    setup(project)
    (project.root / "build" / "folder").mkdir(parents=True)  # empty: nothing to lose
    project.run("run")
    # a first run killed after the step wrote part of its output: the output was claimed
    # before the step ran, so the next run takes it back (the step executes again)
    project.write("pipe.py", PIPE.replace("OUT_FILE", "data/other.csv")
                  .replace("OUT_DIR", "build/folder"))
    (project.root / ".zenbuild" / "claims").write_text(
        (project.root / ".zenbuild" / "claims").read_text() + "data/other.csv\n")
    project.write("data/other.csv", "half written")
    project.ticks()
    r = project.run("run")
    assert r.executed == ["table"] and project.read("data/other.csv") == "a,b\n1,2\n"


def test_a_hand_edited_output_goes_to_the_trash_before_a_restore(project: Project) -> None:
    setup(project)
    project.run("run")
    project.write("data/table.csv", "my edit\n")
    project.write("build/folder/mine.txt", "a file I added\n")
    project.ticks()
    r = project.run("run")
    assert sorted(r.cached) == ["folder", "listing", "table"] and project.ticks() == []
    assert project.read("data/table.csv") == "a,b\n1,2\n"
    assert not (project.root / "build" / "folder" / "mine.txt").exists()
    assert trash_files(project) == ["build/folder/mine.txt", "data/table.csv"]
    trash = project.root / ".zenbuild" / "trash"
    kept = {p.name: p.read_text() for p in trash.rglob("*") if p.is_file()}
    assert kept == {"table.csv": "my edit\n", "mine.txt": "a file I added\n"}
    moved = [ln for ln in r.stderr.splitlines() if "moved your version of" in ln]
    assert len(moved) == 2 and str(trash) in moved[0]


def test_zenbuilds_own_other_version_is_replaced_without_trash(project: Project) -> None:
    pipe = '''
from zenbuild import Output, pipeline, step


@step
def write(out: Output, n: int = 1) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(str(n))


@pipeline
def safe(n: int = 1):
    write(Output("build/n.txt"), n)
'''
    project.write("pipe.py", pipe)
    project.write("zenbuild.toml", 'pipelines = ["pipe:safe"]\n')
    project.run("run")
    project.run("run", "--param", "n=2")
    r = project.run("run")  # n=1 again: its output is restored over n=2's, which the store has
    assert r.cached == ["write"] and project.read("build/n.txt") == "1"
    assert trash_files(project) == [] and "moved your version" not in r.stderr


def test_a_store_inside_an_output_is_refused(project: Project) -> None:
    setup(project, out_dir="build", store="build/.zenbuild")
    r = project.run("run", check=2)
    assert "inside Output('build') of step folder" in r.stderr and "Traceback" not in r.output
    assert project.ticks() == [] and not (project.root / "build" / ".zenbuild" / "cas").exists()


def test_an_output_inside_the_store_is_refused(project: Project) -> None:
    setup(project, out_file=".zenbuild/stolen.csv")
    r = project.run("run", check=2)
    assert "Output('.zenbuild/stolen.csv') of step table is inside the store" in r.stderr


def test_leftover_temp_files_of_a_killed_run_are_removed_and_never_seen_by_dir(
        project: Project) -> None:
    setup(project)
    project.run("run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    beside = project.root / "data" / f"table.csv.zenbuild-tmp-{dead}"
    inside = project.root / "build" / "folder" / f"one.txt.zenbuild-tmp-{dead}"
    in_store = project.root / ".zenbuild" / "tmp" / f"{dead}-{'ab' * 16}"
    for p in (beside, inside, in_store):
        p.write_bytes(b"torn" * 1000)
    live = project.root / "data" / f"table.csv.zenbuild-tmp-{1}"  # pid 1 is running
    live.write_bytes(b"not ours to remove")
    project.ticks()
    r = project.run("run")
    assert r.executed == [] and project.ticks() == []  # listing's Dir("build") did not change
    assert not beside.exists() and not inside.exists() and not in_store.exists()
    assert live.exists()
    assert sorted(p.name for p in (project.root / "build" / "folder").iterdir()) == ["one.txt"]


def test_a_dir_input_ignores_temp_files(project: Project) -> None:
    setup(project)
    project.run("run")
    project.ticks()
    (project.root / "build" / "x.zenbuild-tmp-1").write_text("in flight")
    assert project.run("run").executed == []
    (project.root / "build" / "real.txt").write_text("content")
    assert project.run("run").executed == ["listing"]



def _age_trash(project: Project, days: float) -> None:
    """Rename each trash folder TIME-PID as if it had been made ``days`` ago (its name is
    when it was made)."""
    import time

    base = project.root / ".zenbuild" / "trash"
    for d in base.iterdir():
        if d.name.count("-") != 2:
            continue  # not a folder zenbuild made
        pid = d.name.rsplit("-", 1)[1]
        then = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() - days * 86400))
        d.rename(base / f"{then}-{pid}")


def test_cache_gc_prunes_old_trash_and_names_each_folder(project: Project) -> None:
    setup(project)
    project.run("run")
    project.write("data/table.csv", "my edit\n")
    project.run("run")  # the restore moves the edit to the trash
    assert trash_files(project) == ["data/table.csv"]
    info = project.run("cache", "info")
    assert "trash:        1 folders" in info.stdout and "older than 30d" in info.stdout
    (project.root / ".zenbuild" / "trash" / "notes").mkdir()  # not zenbuild's: never touched
    r = project.run("cache", "gc")  # made today: kept (30 days by default)
    assert "removed trash folder" not in r.stdout and trash_files(project) != []
    _age_trash(project, 10)
    project.write("data/table.csv", "a second edit\n")
    project.run("run")
    assert len(trash_files(project)) == 2
    base = project.root / ".zenbuild" / "trash"
    r = project.run("cache", "gc", "--trash-older-than", "7d")  # the 10-day-old one goes
    removed = [ln for ln in r.stdout.splitlines() if ln.startswith("removed trash folder")]
    assert len(removed) == 1 and "1 files" in removed[0] and "; removed 1 trash folders" in r.stdout
    assert [p.read_text() for p in base.rglob("table.csv")] == ["a second edit\n"]
    project.write("zenbuild.toml", project.read("zenbuild.toml") + '[cache]\ntrash_keep = "0s"\n')
    r = project.run("cache", "gc")
    assert r.stdout.count("removed trash folder") == 1 and trash_files(project) == []
    assert (base / "notes").is_dir()
    bad = project.run("cache", "gc", "--trash-older-than", "soon", check=2)
    assert "age 'soon'" in bad.stderr and "Traceback" not in bad.output


PRIVATE = '''
import os

from zenbuild import Output, pipeline, step


@step
def key(out: Output) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"PRIVATE KEY " * 10000)
    os.close(fd)


@step
def token(out: Output) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o640)
    os.write(fd, b"token=abc123")
    os.close(fd)


@pipeline
def p():
    key(Output("build/key.pem"))
    token(Output("build/token"))
'''


def test_a_private_output_stays_private_in_the_store_and_when_restored(project: Project,
                                                                         monkeypatch) -> None:
    """An output others may not read was stored world-readable (a 0644 blob; a small one in
    the database, also 0644), and restored through a 0644 temp file chmodded afterwards. Its
    stored copy is a file only its owner can read, and a restore never makes it readable."""
    import sqlite3
    import stat as st_

    from zenbuild.digest import StatCache
    from zenbuild.store.db import Store

    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PRIVATE)
    project.run("run")
    db = sqlite3.connect(project.root / ".zenbuild" / "zenbuild.db")
    try:
        assert db.execute("SELECT count(*) FROM blobs WHERE data = ?",
                          (b"token=abc123",)).fetchone()[0] == 0
    finally:
        db.close()
    blobs = [p for p in (project.root / ".zenbuild" / "cas").rglob("*") if p.is_file()]
    sizes = {p.stat().st_size: st_.S_IMODE(p.stat().st_mode) for p in blobs}
    assert sizes[120000] == 0o600 and sizes[12] == 0o600, sizes
    (project.root / "build" / "key.pem").unlink()
    (project.root / "build" / "token").unlink()
    r = project.run("run")
    assert sorted(r.cached) == ["key", "token"]
    assert st_.S_IMODE((project.root / "build/key.pem").stat().st_mode) == 0o600
    assert st_.S_IMODE((project.root / "build/token").stat().st_mode) == 0o640
    assert (project.root / "build/token").read_bytes() == b"token=abc123"
    # the temp file a restore writes is made owner-only, before any byte is in it
    made = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **k):
        if "zenbuild-tmp" in str(path):
            made.append(mode)
        return real_open(path, flags, mode, *a, **k)

    store = Store(str(project.root / ".zenbuild"), create=False)
    try:
        digest = [p for p in blobs if p.stat().st_size == 120000][0]
        digest = digest.parent.name + digest.name
        monkeypatch.setattr(os, "open", spy)
        store.restore_file(digest, str(project.root / "again.pem"), 0o600, StatCache())
    finally:
        monkeypatch.undo()
        store.close()
    assert made == [0o600] and (project.root / "again.pem").read_bytes().startswith(b"PRIVATE")
