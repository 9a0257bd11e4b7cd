"""store: blobs (inline and files), verification, run history pruning, the lock."""

from __future__ import annotations

import os

import pytest

from zenbuild.errors import CorruptBlob, StoreLocked
from zenbuild.store.db import INLINE_MAX, Store


def test_small_blobs_inline_big_blobs_as_files(tmp_path):
    s = Store(str(tmp_path / "st"))
    small = s.put_blob(b"x" * 10)
    big = s.put_blob(b"y" * (INLINE_MAX + 1))
    assert s.has_blob(small) and s.has_blob(big)
    assert not os.path.exists(s.blob_path(small)) and os.path.exists(s.blob_path(big))
    assert s.get_blob(small) == b"x" * 10 and s.get_blob(big) == b"y" * (INLINE_MAX + 1)
    assert dict(s.iter_blobs()) == {small: 10, big: INLINE_MAX + 1}
    p = tmp_path / "f.bin"
    p.write_bytes(b"z" * (3 * INLINE_MAX))
    d, n = s.put_file(str(p))
    assert n == 3 * INLINE_MAX and os.path.exists(s.blob_path(d))
    out = tmp_path / "restored" / "f.bin"
    s.restore_file(d, str(out))
    assert out.read_bytes() == p.read_bytes()
    s.close()


def test_corrupt_file_blob_is_removed_not_served(tmp_path):
    s = Store(str(tmp_path / "st"))
    big = s.put_blob(b"y" * (INLINE_MAX + 5))
    with open(s.blob_path(big), "r+b") as f:
        f.write(b"Z")
    with pytest.raises(CorruptBlob):
        s.get_blob(big)
    assert not s.has_blob(big)
    with pytest.raises(KeyError):
        s.get_blob(big)
    s.close()


def test_run_history_is_pruned(tmp_path):
    s = Store(str(tmp_path / "st"))
    ids = []
    for i in range(7):
        rid = s.begin_run("p", {})
        s.db.execute("UPDATE runs SET started = ? WHERE id = ?", (1000.0 + i, rid))
        s.finish_run(rid, "succeeded", {"executed": 1},
                     [("a", "executed", f"f{i}", 0.1, ["never built"], None)])
        ids.append(rid)
    s.prune_runs(keep=3)
    assert s.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    assert s.run_steps(ids[0]) == []
    assert s.run_steps(ids[6]) == [{"step": "a", "status": "executed", "fingerprint": "f6",
                                    "duration": 0.1, "reasons": ["never built"], "error": None,
                                    "reason_records": [{"kind": "", "subject": "", "before": None,
                                                        "after": None, "detail": None,
                                                        "text": "never built"}]}]
    s.close()


def test_steps_of_runs_recorded_by_schema_3_are_still_read(tmp_path):
    s = Store(str(tmp_path / "st"))
    rid = s.begin_run("p", {})
    s.db.execute("INSERT INTO run_steps VALUES (?,?,?,?,?,?,?,?)",
                 (rid, 0, "a", "cached", "f", 0.0, '["up to date"]', None))
    assert s.run_steps(rid) == [{"step": "a", "status": "cached", "fingerprint": "f",
                                 "duration": 0.0, "reasons": ["up to date"], "error": None,
                                 "reason_records": [{"kind": "", "subject": "", "before": None,
                                                     "after": None, "detail": None,
                                                     "text": "up to date"}]}]
    s.close()


def test_lock_is_exclusive(tmp_path):
    a = Store(str(tmp_path / "st"))
    b = Store(str(tmp_path / "st"))
    a.lock()
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        b.lock(wait=False)
    a.close()
    b.lock(wait=False)
    b.close()


def test_nested_transactions_commit_once(tmp_path):
    s = Store(str(tmp_path / "st"))
    with s.transaction():
        with s.transaction():
            s.put_blob(b"inner")
        assert s.db.in_transaction
    assert not s.db.in_transaction
    s.hold()
    s.put_blob(b"held")
    assert s.db.in_transaction
    s.release()
    assert not s.db.in_transaction and s.has_blob(s.put_blob(b"held"))
    s.close()


def test_only_trusted_file_records_are_saved(tmp_path):
    """A racily clean record can never become trusted, so it is not kept (nor is an older
    row for its path); a trusted one is, and loads as a row StatCache trusts."""
    import time as _time

    from zenbuild.digest import RACY_NS, FileRecord, StatCache

    s = Store(str(tmp_path / "st"))
    now = _time.time_ns()
    old_key = (5, now - 10 * RACY_NS, 7, now - 10 * RACY_NS)
    with s.transaction():
        s.save_file_records({"a": FileRecord(old_key, "da", now), "b": FileRecord(old_key, "db", now)})
    racy_key = (6, now, 8, now)
    with s.transaction():
        s.save_file_records({"b": FileRecord(racy_key, "db2", now)})
    rows = s.file_records()
    assert rows == {"a": (*old_key, "da")}
    assert StatCache(rows).lookup("a", old_key) == "da"
    s.close()


def test_upgrading_drops_racily_clean_file_rows_that_older_stores_kept(tmp_path):
    """Before schema 5 every stat-cache row was saved and checked against recorded_ns on
    load; rows are now trusted as loaded, so the upgrade removes the racy ones."""
    from zenbuild.digest import RACY_NS, StatCache

    s = Store(str(tmp_path / "st"))
    t = 1_700_000_000_123_456_789
    s.db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?)", [
        ("old", 1, t, 2, t, "d-old", t + 10 * RACY_NS),  # hashed long after its mtime
        ("racy", 1, t, 3, t, "d-racy", t + RACY_NS // 2),  # hashed right after a write
    ])
    s.db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    s.close()
    s = Store(str(tmp_path / "st"))
    rows = s.file_records()
    assert set(rows) == {"old"}
    assert StatCache(rows).lookup("racy", (1, t, 3, t)) is None
    s.close()


def test_a_newer_store_is_refused_and_left_as_it_was(tmp_path):
    from zenbuild.errors import StoreError
    from zenbuild.store.db import SCHEMA_VERSION

    s = Store(str(tmp_path / "st"))
    s.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    s.close()
    with pytest.raises(StoreError, match=f"format version {SCHEMA_VERSION + 1}, newer"):
        Store(str(tmp_path / "st"))
    from tests.conftest import sqlite_db

    with sqlite_db(tmp_path / "st" / "zenbuild.db") as db:
        assert db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION + 1),)


@pytest.mark.parametrize("spoil", ["newer", "not_a_database"])
def test_a_store_that_cannot_be_opened_leaves_no_connection_open(tmp_path, monkeypatch, spoil):
    """Store() that fails after connecting (a newer format refused by migrate, a file that is
    no database failing its first PRAGMA) closes the connection it made: no Database exists
    for anyone to close later. Python 3.13 reports the leak as a ResourceWarning, whenever the
    garbage collector happens to reach it; the check that it is closed holds on every Python."""
    import gc
    import sqlite3
    import warnings

    import zenbuild.store.database as database
    from zenbuild.errors import StoreError
    from zenbuild.store.db import SCHEMA_VERSION

    path = tmp_path / "st"
    if spoil == "newer":
        s = Store(str(path))
        s.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
        s.close()
    else:
        path.mkdir()
        (path / "zenbuild.db").write_bytes(b"hello, not sqlite" * 400)
    made = []

    def connect(db_path, timeout=60.0):
        made.append(real(db_path, timeout))
        return made[-1]

    real = database.connect
    monkeypatch.setattr(database, "connect", connect)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(StoreError):
            Store(str(path))
        gc.collect()
    assert len(made) == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        made[0].execute("SELECT 1")


def test_close_gives_up_the_lock_and_the_connection_when_the_last_commit_fails(
        tmp_path, monkeypatch):
    """close() commits what is held; when that COMMIT fails the error is the caller's, and the
    connection and the workspace lock are let go all the same (another run can start)."""
    import sqlite3

    from zenbuild.errors import StoreError

    s = Store(str(tmp_path / "st"))
    s.lock(wait=False)
    s.hold()
    s.put_blob(b"held, never committed")

    def refuse(*_a, **_k):
        raise StoreError("the disk went away")

    monkeypatch.setattr(s.database, "end", refuse)
    with pytest.raises(StoreError, match="went away"):
        s.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        s.db.execute("SELECT 1")
    other = Store(str(tmp_path / "st"))
    try:
        other.lock(wait=False)  # StoreLocked if the failed close had kept the lock
    finally:
        other.close()


def test_a_failed_write_rolls_back_the_whole_transaction(tmp_path):
    s = Store(str(tmp_path / "st"))
    with pytest.raises(RuntimeError):
        with s.transaction():
            d = s.put_blob(b"kept only if committed")
            raise RuntimeError("step crashed")
    assert not s.db.in_transaction and not s.has_blob(d)
    s.close()


def test_the_facade_keeps_each_concern_in_its_own_part(tmp_path):
    """Store delegates: a blob written through the facade is the part's blob, an entry put
    through it is the action cache's, and both share one connection (one transaction)."""
    from zenbuild.store.db import ActionEntry

    s = Store(str(tmp_path / "st"))
    with s.transaction():
        d = s.put_blob(b"v")
        s.put_action(ActionEntry("fp", "p", "a", d, {}, {"code": {}}))
        assert s.blobs.db is s.actions.db is s.db
    assert s.blobs.get(d) == b"v"
    assert s.actions.step_states("p")["a"].value_inline
    assert s.get_action("fp").components == {"code": {}}
    assert s.actions_using(d) == ["fp"]
    s.delete_actions(["fp"])
    assert s.step_states("p") == {} and s.get_action("fp") is None
    s.close()


class FakeSeconds:
    """A monotonic clock (seconds) the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_group_commit_is_paced_by_the_recorders_clock(tmp_path):
    """Finished steps' entries join one held transaction until COMMIT_EVERY_S has passed on
    the injected clock: before that a second connection (another run, or this store after a
    kill -9) sees none of them; the step that crosses the interval commits them all. Real time
    plays no part, so a loaded machine cannot change the outcome."""
    import contextlib
    import sqlite3

    from zenbuild.commit import COMMIT_EVERY_S, Recorder
    from zenbuild.digest import StatCache
    from zenbuild.graph import Node
    from zenbuild.rebuild import Components

    def comps() -> Components:
        return Components(code={}, code_meta={}, packages={}, params={}, inputs={}, files={},
                          env={})

    s = Store(str(tmp_path / "st"))
    clock = FakeSeconds(1000.0)
    rec = Recorder("p", str(tmp_path), s, StatCache(), sources=None, clock=clock)
    with contextlib.closing(sqlite3.connect(str(tmp_path / "st" / "zenbuild.db"))) as other:

        def committed() -> list:
            return sorted(r[0] for r in other.execute("SELECT step FROM step_state"))

        for i, name in enumerate(["a", "b", "c"]):
            clock.now = 1000.0 + COMMIT_EVERY_S * (i + 1) / 4  # all within one interval
            rec.record(Node(name, None, i, {}), comps(), f"fp-{name}", name.encode(), 0.0)
            assert s.db.in_transaction and committed() == []
        clock.now = 1000.0 + COMMIT_EVERY_S
        rec.record(Node("d", None, 3, {}), comps(), "fp-d", b"d", 0.0)
        assert not s.db.in_transaction and committed() == ["a", "b", "c", "d"]
        clock.now += COMMIT_EVERY_S / 2  # a new interval starts at the last commit
        rec.record(Node("e", None, 4, {}), comps(), "fp-e", b"e", 0.0)
        assert s.db.in_transaction and committed() == ["a", "b", "c", "d"]
    s.close()  # closing commits what is held
    s = Store(str(tmp_path / "st"))
    assert s.get_action("fp-e") is not None
    s.close()


# -- damage: a bad row is a miss, an unreadable database one clear error ---------------------

def _entry(fp: str = "f" * 32, step: str = "s"):
    from zenbuild.store.db import ActionEntry

    return ActionEntry(fp, "p", step, "d" * 32,
                       {"out.txt": {"kind": "file", "digest": "e" * 32, "size": 1}}, {"k": 1})


@pytest.mark.parametrize("sql", [
    "UPDATE actions SET outputs = CAST(X'FFFE' AS TEXT)",
    "UPDATE actions SET outputs = '{not json'",
    "UPDATE actions SET outputs = '{\"out.txt\": 3}'",
    "UPDATE actions SET step = X'00'",
    "UPDATE actions SET last_used = 'soon'",
])
def test_a_damaged_action_row_is_a_miss(tmp_path, sql):
    s = Store(str(tmp_path / "st"))
    s.put_action(_entry())
    s.put_action(_entry("a" * 32, "t"))
    s.db.execute(sql + " WHERE fingerprint = ?", ("f" * 32,))
    assert s.get_action("f" * 32) is None
    assert list(s.step_states("p")) == ["t"]  # the other entry is served as before
    s.put_action(_entry())  # the step executed again: its row is replaced
    assert s.get_action("f" * 32).outputs["out.txt"]["digest"] == "e" * 32
    s.close()


def test_damaged_components_and_discovered_never_serve_unverified(tmp_path):
    from zenbuild.store.actions import DAMAGED_RECORD

    s = Store(str(tmp_path / "st"))
    s.put_action(_entry())
    s.db.execute("UPDATE actions SET components = 'garbage', discovered = '[1'")
    e = s.get_action("f" * 32)
    assert e.components == {}
    assert e.discovered == DAMAGED_RECORD  # verified as "a file it read is missing": a miss
    s.close()


def test_damaged_stat_source_and_run_rows_are_dropped(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.db.execute("INSERT INTO files VALUES ('a.txt', 1, 1, 2, 3, X'00', 4)")
    s.db.execute("INSERT INTO files VALUES ('b.txt', 1, 1, 2, 3, CAST(X'FF' AS TEXT), 4)")
    s.db.execute("INSERT INTO files VALUES ('ok.txt', 1, 1, 2, 3, 'd', 4)")
    assert list(s.file_records()) == ["ok.txt"]  # a digest that is not clean text: dropped
    s.db.execute("INSERT INTO source_cache VALUES ('k', 'd', 'nope')")
    assert s.source_entry("k") is None
    run = s.begin_run("p", {})
    s.finish_run(run, "succeeded", {}, [])
    s.db.execute("UPDATE runs SET steps = CAST(X'5BFF' AS TEXT), params = '{'")
    assert s.run_steps(run) == [] and s.list_runs()[0]["params"] == {}
    s.close()


def test_garbage_pages_are_one_clear_error(tmp_path):
    from zenbuild.errors import StoreError

    s = Store(str(tmp_path / "st"))
    for i in range(300):
        s.put_action(_entry(f"{i:032x}"))
    s.close()
    db = tmp_path / "st" / "zenbuild.db"
    data = bytearray(db.read_bytes())
    data[4096:] = bytes(len(data) - 4096)
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="Move the store folder away"):
        s = Store(str(tmp_path / "st"))
        s.step_states("p")
        s.get_action("0" * 32)


def test_a_full_disk_is_disk_full(tmp_path):
    import contextlib
    import sqlite3

    from zenbuild.store.database import DiskFull, SafeCursor

    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        cur = SafeCursor(db)
        e = sqlite3.OperationalError("database or disk is full")
        with pytest.raises(DiskFull, match="no space left"):
            cur._raise(e)
    assert DiskFull("x").exit_code == 1


def test_bad_text_found_by_execute_itself_is_fetched_leniently(tmp_path):
    """Python 3.10's sqlite3 fetches the first row inside execute(): a row whose text is not
    UTF-8 fails there, not in fetchall(). Its rows are fetched again with the bad bytes
    replaced, as when fetchall() fails (3.11+)."""
    import contextlib
    import sqlite3

    from zenbuild.store.database import BAD_TEXT, SafeCursor

    class Early(sqlite3.Cursor):  # what 3.10's execute does with such a row
        def execute(self, sql, parameters=(), /):
            raise sqlite3.OperationalError("Could not decode to UTF-8 column 'v' with text 'x'")

    class Cursor(SafeCursor, Early):
        pass

    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE t (v TEXT)")
        db.execute("INSERT INTO t VALUES (CAST(X'61FF62' AS TEXT)), ('ok')")
        rows = Cursor(db).execute("SELECT v FROM t ORDER BY rowid").fetchall()
        assert rows == [("a" + BAD_TEXT + "b",), ("ok",)]
        cur = Cursor(db).execute("SELECT v FROM t ORDER BY rowid")
        assert cur.fetchone() == ("a" + BAD_TEXT + "b",) and cur.fetchone() == ("ok",)
        assert cur.fetchone() is None and cur.lenient


# -- outputs: placement, adoption, trash, leftovers -------------------------------------------

def test_store_and_outputs_must_not_overlap(tmp_path):
    from zenbuild.errors import PathError
    from zenbuild.store.outputs import check_placement

    root = str(tmp_path)
    check_placement(root, os.path.join(root, ".zenbuild"), [("a", "build"), ("b", "out.txt")])
    with pytest.raises(PathError, match="inside Output"):
        check_placement(root, os.path.join(root, "build", ".zb"), [("a", "build")])
    with pytest.raises(PathError, match="inside Output"):
        check_placement(root, os.path.join(root, "build"), [("a", "build")])
    with pytest.raises(PathError, match="is inside the store"):
        check_placement(root, os.path.join(root, "st"), [("a", "st/x.csv")])
    check_placement(root, os.path.join(root, "build2"), [("a", "build")])  # a prefix, not inside


def test_adopting_outputs(tmp_path):
    from zenbuild.errors import PathError
    from zenbuild.store.outputs import Claims, check_adopt

    s = Store(str(tmp_path / "st"))
    root = tmp_path / "proj"
    (root / "empty").mkdir(parents=True)
    (root / "user.csv").write_text("mine")
    claims = Claims(s)
    # absent, empty: claimed; only the absent one is said to be absent (clear_outputs skips
    # its look for a partial folder; an empty folder is still removed before the step runs)
    assert check_adopt(str(root), "a", ["new.txt", "empty"], {}, s, claims) == ["new.txt"]
    assert claims.known() == {"new.txt", "empty"} and Claims(s).known() == claims.known()
    claims.add(["later.txt"])  # appended through the same open file, seen by a new reader
    assert Claims(s).known() == {"new.txt", "empty", "later.txt"}
    with pytest.raises(PathError, match="user.csv is a file"):
        check_adopt(str(root), "a", ["user.csv"], {}, s, claims)
    check_adopt(str(root), "a", ["user.csv"], {"user.csv": {}}, s, claims)  # its entry lists it
    (root / "new.txt").write_text("written by a killed run")
    assert check_adopt(str(root), "a", ["new.txt"], {}, s, Claims(s)) == []  # claimed
    claims.close()
    claims.close()  # twice: nothing to close
    s.close()


def test_trash_keeps_what_no_entry_recorded_there(tmp_path):
    """zenbuild's own is what an entry recorded at that path: a file whose bytes are stored
    but that no entry put there (a copy the user made of an output) is the user's."""
    from zenbuild.store.db import ActionEntry
    from zenbuild.store.outputs import Trash

    s = Store(str(tmp_path / "st"))
    root = tmp_path / "proj"
    root.mkdir()
    (root / "ours.txt").write_text("stored")
    d = s.put_blob(b"stored")
    (root / "copy.txt").write_text("stored")  # the same bytes, at a path no entry recorded
    (root / "theirs.txt").write_text("hand edit")
    entry = ActionEntry("f" * 32, "p", "s", d, {"ours.txt": {"kind": "file", "digest": d,
                                                            "size": 6}}, {}, 0.0, 0.0, 0.0)
    said = []
    t = Trash(s, said.append, entries=(entry, None))
    assert not t.keep_if_users(str(root), "ours.txt", None) and (root / "ours.txt").exists()
    assert t.keep_if_users(str(root), "theirs.txt", None) and not (root / "theirs.txt").exists()
    assert t.keep_if_users(str(root), "copy.txt", None) and not (root / "copy.txt").exists()
    kept = sorted((tmp_path / "st" / "trash").rglob("*.txt"))
    assert [p.read_text() for p in kept] == ["stored", "hand edit"] and str(kept[1]) in said[0]
    s.close()


def test_leftover_temp_files_only_of_dead_processes(tmp_path):
    import subprocess
    import sys

    from zenbuild.store.outputs import leftover, sweep_leftovers, sweep_store_tmp

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    assert leftover(f"x.csv.zenbuild-tmp-{dead}") and not leftover(f"x.csv.zenbuild-tmp-{os.getpid()}")
    assert not leftover("x.csv")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"a.zenbuild-tmp-{dead}").write_text("")
    (tmp_path / "out" / f"a.zenbuild-tmp-{os.getpid()}").write_text("")
    assert sweep_leftovers(str(tmp_path), ["out/a"]) == 1
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / f"{dead}-abc").write_text("")
    (tmp_path / "tmp" / f"{os.getpid()}-abc").write_text("")
    assert sweep_store_tmp(str(tmp_path / "tmp")) == 1
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [f"{os.getpid()}-abc"]


def test_a_full_disk_at_the_end_of_a_run_is_raised_after_the_summary(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from zenbuild.commit import Recorder
    from zenbuild.digest import StatCache
    from zenbuild.store.database import DiskFull

    s = Store(str(tmp_path / "st"))
    sources = SimpleNamespace(new={})
    rec = Recorder("p", str(tmp_path), s, StatCache(), sources)  # type: ignore[arg-type]
    run = s.begin_run("p", {})

    def full(*a, **k):
        raise DiskFull("no space left on the device holding x")

    monkeypatch.setattr(s, "finish_run", full)
    rec.persist(run, "succeeded", {}, [], "")  # kept, not raised: the summary comes first
    assert not s.db.in_transaction  # given up cleanly: the store is usable
    with pytest.raises(DiskFull, match="no space left"):
        rec.raise_deferred()
    rec.raise_deferred()  # raised once
    s.put_action(_entry())
    assert s.get_action("f" * 32) is not None
    s.close()
