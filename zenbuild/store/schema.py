"""The store database's schema, its version, and the in-place migrations from older versions."""

from __future__ import annotations

import sqlite3
from typing import Dict, List

from zenbuild.digest import RACY_NS, RACY_NS_COARSE
from zenbuild.errors import StoreError

# The database schema. Older stores are migrated in place by MIGRATIONS; newer ones refused.
SCHEMA_VERSION = 6
# The format of what fingerprints point at (value encoding, blob and manifest layout). It is
# part of every fingerprint, so changing it invalidates every entry; a schema change does not.
# 2: canonical pickles (ZBP2: sets sorted, tensors by bytes), numpy scalars kept with their
#    dtype, path params relative to the root. Entries of format 1 are never served again (their
#    values may hold numpy scalars decoded as plain floats); every step executes once.
# 3: values written from their buffers: array payloads aligned to 64 bytes (tag a), pickles
#    with protocol-5 buffers out of band (ZBO1), so loads map them copy-on-write. Entries of
#    format 2 are never served again (every step executes once); their blobs stay readable.
# 4: canonical pickles write strings and bytes by value (not by which are one object), leave
#    out pandas' lazily filled _cache dicts and unused Arrow validity bitmaps (the same digest
#    in every process); a 0-d array keeps its shape. Entries of format 3 are never served
#    again (every step executes once); their blobs stay readable.
STORE_FORMAT = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    fingerprint  TEXT PRIMARY KEY,
    pipeline     TEXT NOT NULL,
    step         TEXT NOT NULL,
    value_digest TEXT NOT NULL,
    outputs      TEXT NOT NULL,
    components   TEXT NOT NULL,
    created      REAL NOT NULL,
    last_used    REAL NOT NULL,
    duration     REAL NOT NULL,
    discovered   TEXT
);
CREATE TABLE IF NOT EXISTS step_state (
    pipeline TEXT NOT NULL, step TEXT NOT NULL, fingerprint TEXT NOT NULL,
    PRIMARY KEY (pipeline, step)
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER,
    digest TEXT NOT NULL, recorded_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS source_cache (
    key TEXT PRIMARY KEY, digest TEXT NOT NULL, refs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    status TEXT NOT NULL, executed INTEGER DEFAULT 0, cached INTEGER DEFAULT 0,
    failed INTEGER DEFAULT 0, skipped INTEGER DEFAULT 0, params TEXT, log TEXT, steps TEXT
);
CREATE TABLE IF NOT EXISTS run_steps (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
    fingerprint TEXT, duration REAL, reasons TEXT, error TEXT,
    PRIMARY KEY (run_id, seq)
);
"""

# MIGRATIONS[v]: the statements that take a store from schema v to v + 1.
MIGRATIONS: Dict[int, List[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS source_cache ("
        " key TEXT PRIMARY KEY, digest TEXT NOT NULL, refs TEXT NOT NULL)"
    ],
    2: ["CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL)"],
    # A run's steps are one JSON list in runs.steps (a row per step cost a no-op run of 1,000
    # steps ~5 ms); run_steps keeps the steps of runs recorded before.
    3: ["ALTER TABLE runs ADD COLUMN steps TEXT"],
    # Stat-cache rows are now trusted when their stat matches, because only trusted rows are
    # saved; older stores also kept racily clean ones (mtime within the racy window of
    # recorded_ns, digest.RACY_NS / RACY_NS_COARSE), which must go.
    4: ["DELETE FROM files WHERE mtime_ns + (CASE WHEN mtime_ns % 1000000 = 0 "
        f"THEN {RACY_NS_COARSE} ELSE {RACY_NS} END) >= recorded_ns"],
    # What a step touched while it ran, verified before its entry is served (discovered.py);
    # its own column, NULL when there is nothing to verify, so a no-op decodes no components.
    # Older entries have none: they are served as before, until their step runs again.
    5: ["ALTER TABLE actions ADD COLUMN discovered TEXT"],
}


def migrate(db: sqlite3.Connection, where: str) -> None:
    """Create the tables of a new store, or bring an older one to SCHEMA_VERSION in one
    transaction; refuse a newer one (StoreError naming ``where``). The caller holds no
    transaction."""
    row = None
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:
        pass
    if row is not None:
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {where} has format version {version}, newer than this "
                f"zenbuild understands ({SCHEMA_VERSION}). Upgrade zenbuild, or point "
                "`store` in zenbuild.toml at another folder."
            )
        if version == SCHEMA_VERSION:
            return
        stmts = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
        stmts.append(f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'")
    else:
        stmts = [s for s in SCHEMA.strip().split(";") if s.strip()]
        stmts.append(f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}')")
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in stmts:
            try:
                db.execute(stmt)
            except sqlite3.OperationalError as e:
                # a column already there (a store whose version row was put back by hand):
                # adding it again is the one step that may be skipped
                if not (stmt.startswith("ALTER TABLE") and "duplicate column" in str(e)):
                    raise
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
