"""End-to-end: `zenbuild cache info|gc|verify|clear` on a real store."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import ContextManager, Dict

import pytest
from conftest import Project, sqlite_db

PIPE = '''
from zenbuild import Output, pipeline, step
from ticker import tick


@step
def small() -> str:
    tick("small")
    return "s"


@step
def big(n: int = 200_000) -> str:
    tick("big")
    return "b" * n


@step
def twin() -> str:
    tick("twin")
    return "s"  # the same bytes as small: both entries need one blob


@step
def files(out: Output) -> None:
    tick("files")
    out.mkdir(parents=True, exist_ok=True)
    (out / "one.txt").write_text("one" * 1000)
    (out / "two.txt").write_text("two" * 1000)


@pipeline
def admin():
    small()
    big()
    twin()
    files(Output("build/files"))
'''

ALL = ["big", "files", "small", "twin"]


@pytest.fixture
def built(project: Project) -> Project:
    project.write("pipe.py", PIPE)
    project.write("zenbuild.toml", 'pipelines = ["pipe:admin"]\n')
    project.run("run")
    assert sorted(project.ticks()) == ALL
    return project


def db(p: Project) -> ContextManager[sqlite3.Connection]:
    """The project's store database, committed and closed at the end of the ``with``."""
    return sqlite_db(p.root / ".zenbuild" / "zenbuild.db")


def set_last_used(p: Project, ages: Dict[str, float]) -> None:
    now = time.time()
    with db(p) as c:
        for step_name, age in ages.items():
            c.execute("UPDATE actions SET last_used = ? WHERE step = ?", (now - age, step_name))


def last_used(p: Project) -> Dict[str, float]:
    with db(p) as c:
        return dict(c.execute("SELECT step, last_used FROM actions").fetchall())


def entry_steps(p: Project) -> list:
    with db(p) as c:
        return sorted(r[0] for r in c.execute("SELECT step FROM actions"))


def blob_count(p: Project) -> int:
    """Blobs as files under cas/ plus small ones kept inline in the database."""
    files = sum(1 for f in (p.root / ".zenbuild" / "cas").rglob("*") if f.is_file())
    with db(p) as c:
        return files + c.execute("SELECT count(*) FROM blobs").fetchone()[0]


def test_info_counts_entries_and_blobs(built: Project) -> None:
    r = built.run("cache", "info", "--json")
    i = json.loads(r.stdout)
    assert i["entries"] == 4
    # values: "s" (shared by small and twin), "b"*n, None; files: manifest + 2 files
    assert i["blobs"] == blob_count(built) == 6
    assert i["blob_bytes"] > 200_000
    assert i["unreferenced_blobs"] == 0
    assert i["oldest_created"] <= time.time()
    text = built.run("cache", "info").stdout
    assert "entries:      4 (across 4 steps)" in text


def test_gc_older_than_keeps_what_kept_entries_need(built: Project) -> None:
    set_last_used(built, {"small": 40 * 86400, "big": 40 * 86400, "twin": 3600, "files": 60})
    r = built.run("cache", "gc", "--older-than", "30d")
    assert "removed 2 entries" in r.stdout
    assert entry_steps(built) == ["files", "twin"]
    assert built.run("cache", "verify").returncode == 0  # every kept entry is whole
    r = built.run("run")
    assert sorted(r.executed) == ["big", "small"]  # twin's (and so small's) blob was kept
    assert sorted(r.cached) == ["files", "twin"]


def test_gc_max_size_drops_least_recently_used_first(built: Project) -> None:
    set_last_used(built, {"big": 500, "files": 400, "small": 300, "twin": 200})
    r = built.run("cache", "gc", "--max-size", "100KB")
    assert entry_steps(built) == ["files", "small", "twin"]  # big was the least recently used
    assert "freed 195.3 KB" in r.stdout
    built.run("cache", "gc", "--max-size", "1B")
    assert entry_steps(built) == [] and blob_count(built) == 0
    assert sorted(built.run("run").executed) == ALL


def test_gc_removes_blobs_no_entry_needs(built: Project) -> None:
    orphan = built.root / ".zenbuild" / "cas" / "ff" / ("0" * 30)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left over")
    assert json.loads(built.run("cache", "info", "--json").stdout)["unreferenced_blobs"] == 1
    built.run("cache", "gc")
    assert not orphan.exists()
    assert entry_steps(built) == ALL
    assert built.run("run").executed == []


def test_verify_reports_corrupt_blobs_and_repair_removes_them(built: Project) -> None:
    big_value = next(p for p in (built.root / ".zenbuild" / "cas").rglob("*")
                     if p.is_file() and p.stat().st_size > 100_000)
    big_value.write_bytes(b"x" + big_value.read_bytes()[1:])
    r = built.run("cache", "verify", check=1)
    assert "corrupt blob" in r.stdout and "of step big" in r.stdout and "--repair" in r.stdout
    assert "1 corrupt, 0 damaged rows, 1 broken entries" in r.stdout
    assert entry_steps(built) == ALL and big_value.exists()  # only reported
    r = built.run("cache", "verify", "--repair", check=1)
    assert "1 corrupt, 0 damaged rows, 1 broken entries removed" in r.stdout
    assert entry_steps(built) == ["files", "small", "twin"] and not big_value.exists()
    assert built.run("cache", "verify").returncode == 0
    assert built.run("run").executed == ["big"]


def damage(built: Project, sql: str) -> None:
    with db(built) as c:
        assert c.execute(sql).rowcount > 0, f"nothing damaged: {sql}"


def trusted_file_rows(built: Project) -> None:
    """Give the stat cache rows to damage: a digest recorded within 100 ms of its file's mtime
    is racily clean and never saved, which on a fast machine is every file the fixture wrote.
    Age the outputs and run again: their digests are then recorded, trusted, and saved."""
    old = time.time() - 60
    for f in (built.root / "build" / "files").iterdir():
        os.utime(f, (old, old))
    assert built.run("run").executed == []


@pytest.mark.parametrize("sql", [
    "UPDATE actions SET outputs = CAST(X'FFFE7B' AS TEXT) WHERE step = 'files'",  # not UTF-8
    "UPDATE actions SET outputs = '{garbage' WHERE step = 'files'",  # not JSON
    "UPDATE actions SET outputs = '[1, 2]' WHERE step = 'files'",  # the wrong shape
    "UPDATE actions SET created = 'yesterday' WHERE step = 'files'",  # the wrong type
    "UPDATE actions SET value_digest = X'0102' WHERE step = 'files'",
    "UPDATE actions SET step = CAST(X'66696CFF' AS TEXT) WHERE step = 'files'",
    "UPDATE actions SET value_digest = '' WHERE step = 'files'",  # not a digest (a review)
    "UPDATE actions SET value_digest = '../../zenbuild.db' WHERE step = 'files'",
    "UPDATE actions SET outputs = replace(outputs, '\"digest\": \"', '\"digest\": \"/') "
    "WHERE step = 'files'",
])
def test_a_damaged_entry_row_is_a_miss_reported_and_repaired(built: Project, sql: str) -> None:
    damage(built, sql)
    assert "Traceback" not in built.run("status", check=None).output
    r = built.run("cache", "verify", check=1)
    assert "damaged row in actions" in r.stdout and "Traceback" not in r.output
    r = built.run("run")
    assert r.executed == ["files"] and sorted(r.cached) == ["big", "small", "twin"]
    assert (built.root / "build" / "files" / "one.txt").read_text() == "one" * 1000
    r = built.run("run")  # the row was replaced: served from now on
    assert r.executed == []
    built.run("cache", "verify", "--repair", check=None)
    assert built.run("cache", "verify").returncode == 0
    assert built.run("run").executed == []


@pytest.mark.parametrize("sql,table", [
    ("UPDATE files SET path = CAST(X'FF' || CAST(path AS BLOB) AS TEXT)", "files"),
    ("UPDATE files SET size = 'big'", "files"),
    ("UPDATE source_cache SET refs = 'not json'", "source_cache"),
    ("UPDATE step_state SET step = CAST(X'FF' AS TEXT) WHERE step = 'big'", "step_state"),
    ("UPDATE runs SET steps = CAST(X'5BFF' AS TEXT)", "runs"),
    ("INSERT INTO blobs VALUES (CAST(X'FFEE' AS TEXT), X'00')", "blobs"),
])
def test_damaged_rows_of_other_tables(built: Project, sql: str, table: str) -> None:
    if table == "files":
        trusted_file_rows(built)
    damage(built, sql)
    r = built.run("cache", "verify", check=1)
    assert f"damaged row in {table}" in r.stdout
    assert "Traceback" not in built.run("runs", check=None).output
    r = built.run("run")
    assert "Traceback" not in r.output
    assert r.executed == []  # a lost step_state row: the entry is found by its fingerprint
    built.run("cache", "verify", "--repair", check=None)
    assert built.run("cache", "verify").returncode == 0
    assert built.run("run").executed == []


def test_garbage_in_database_pages_stops_every_command_with_one_message(built: Project) -> None:
    db = built.root / ".zenbuild" / "zenbuild.db"
    data = bytearray(db.read_bytes())
    data[4096:] = bytes((i * 131 + 7) % 256 for i in range(len(data) - 4096))
    db.write_bytes(bytes(data))
    for cmd in (["run"], ["status"], ["explain", "big"], ["cache", "verify"], ["runs"]):
        r = built.run(*cmd, check=2)
        assert "Traceback" not in r.output, r
        assert "move the store folder away" in r.stderr.lower(), r
        assert str(db) in r.stderr


def test_a_file_that_is_not_a_database(built: Project) -> None:
    (built.root / ".zenbuild" / "zenbuild.db").write_bytes(b"hello, not sqlite" * 400)
    for name in ("zenbuild.db-wal", "zenbuild.db-shm"):
        (built.root / ".zenbuild" / name).unlink(missing_ok=True)
    for cmd in (["run"], ["status"], ["cache", "verify"]):
        r = built.run(*cmd, check=2)
        assert "move the store folder away" in r.stderr.lower() and "Traceback" not in r.output


def test_clear_removes_everything(built: Project) -> None:
    r = built.run("cache", "clear")
    assert "removed 4 entries and 6 blobs" in r.stdout
    assert entry_steps(built) == [] and blob_count(built) == 0
    assert sorted(built.run("run").executed) == ALL


def test_bad_sizes_and_ages_are_usage_errors(built: Project) -> None:
    r = built.run("cache", "gc", "--max-size", "lots", check=2)
    assert "500MB or 5GB" in r.stderr
    r = built.run("cache", "gc", "--older-than", "30 days", check=2)
    assert "30d" in r.stderr


def test_info_without_a_store(project: Project, tmp_path: Path) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:admin"]\n')
    r = project.run("cache", "info", check=2)
    assert "nothing has been run here yet" in r.stderr


def test_gc_refuses_an_age_below_the_hour_that_use_is_recorded_to(built: Project) -> None:
    r = built.run("cache", "gc", "--older-than", "30m", check=2)
    assert "at least 1h" in r.stderr
    assert entry_steps(built) == ALL  # nothing removed


def test_a_run_refreshes_last_used_only_when_it_is_an_hour_old(built: Project) -> None:
    set_last_used(built, {"small": 2 * 3600, "big": 600})
    before = last_used(built)
    assert built.run("run").executed == []
    after = last_used(built)
    assert after["small"] > before["small"] + 3600  # used now: refreshed
    assert after["big"] == before["big"]  # used within the hour: left as it is
