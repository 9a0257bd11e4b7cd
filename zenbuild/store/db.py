"""The store: content-addressed blobs plus a SQLite database (action cache, step state, runs,
file digests). Knows digests, not graphs.

On-disk format, version 1 (see docs/store-format.md):
  STORE/cas/ab/cdef...   blob named by the xxh3-128 hex digest of its bytes; written to
                         STORE/tmp/ then renamed into place; verified against its name on read
  STORE/zenbuild.db      SQLite (WAL), tables below; meta.schema_version = SCHEMA_VERSION
  STORE/lock             flock()ed by a run for the workspace
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

import xxhash

from zenbuild.digest import RACY_NS, RACY_NS_COARSE, FileRecord, hash_stream
from zenbuild.errors import CorruptBlob, StoreError, StoreLocked

# The database schema. Older stores are migrated in place by _MIGRATIONS; newer ones refused.
SCHEMA_VERSION = 5
# The format of what fingerprints point at (value encoding, blob and manifest layout). It is
# part of every fingerprint, so changing it invalidates every entry; a schema change does not.
STORE_FORMAT = 1

_SCHEMA = """
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
    duration     REAL NOT NULL
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


# _MIGRATIONS[v]: the statements that take a store from schema v to v + 1.
_MIGRATIONS: Dict[int, List[str]] = {
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
}

# Blobs up to this size live in the database (table `blobs`) rather than as files: creating a
# file costs 0.1-0.5 ms on the virtual disks we run on, and a cold run of N steps would create
# 2N of them (a return value and an output copy per step). Bigger blobs are files under cas/.
INLINE_MAX = 64 * 1024

# A served entry's last_used is rewritten only when older than this (like relatime for atimes):
# a no-op run of a big pipeline then writes nothing to the action cache, and `cache gc`, which
# ranks entries by last use, sees ages to within an hour.
TOUCH_EVERY_S = 3600.0

# Run history kept in the store (`zenbuild runs`, the dashboard); older runs are forgotten.
RUNS_KEPT = 500


class ActionEntry:
    """One action-cache entry: fingerprint -> value digest, output digests and components.
    ``components`` is decoded from JSON only when asked for (explain, a changed step)."""

    def __init__(
        self,
        fingerprint: str,
        pipeline: str,
        step: str,
        value_digest: str,
        outputs: Dict[str, Dict[str, Any]],
        components: Any,
        created: float = 0.0,
        last_used: float = 0.0,
        duration: float = 0.0,
        loader: Optional[Callable[[str], str]] = None,
    ) -> None:
        self.fingerprint = fingerprint
        self.pipeline = pipeline
        self.step = step
        self.value_digest = value_digest
        self.outputs = outputs
        self._components = components  # a dict, its JSON text, or None: ask loader
        self._loader = loader
        self.created = created
        self.last_used = last_used
        self.duration = duration
        self.value_inline = False  # step_states(): the value blob is in the blobs table

    @property
    def components(self) -> Dict[str, Any]:
        c = self._components
        if c is None and self._loader is not None:
            c = self._loader(self.fingerprint)
        if isinstance(c, str):
            c = json.loads(c)
        self._components = c
        return c  # type: ignore[no-any-return]

    @components.setter
    def components(self, value: Dict[str, Any]) -> None:
        self._components = value

    def __repr__(self) -> str:
        return f"ActionEntry({self.step!r}, {self.fingerprint!r})"


def _entry(row: Tuple[Any, ...]) -> ActionEntry:
    return ActionEntry(
        fingerprint=row[0],
        pipeline=row[1],
        step=row[2],
        value_digest=row[3],
        outputs=json.loads(row[4]) if row[4] != "{}" else {},
        components=row[5],
        created=row[6],
        last_used=row[7],
        duration=row[8],
    )


_ACTION_COLS = "fingerprint, pipeline, step, value_digest, outputs, components, created, last_used, duration"


class Store:
    """A store directory. Open it with ``Store(path)``; close it with ``close()``."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.cas = os.path.join(self.path, "cas")
        self.tmp = os.path.join(self.path, "tmp")
        db_path = os.path.join(self.path, "zenbuild.db")
        if not os.path.isdir(self.path):
            if not create:
                raise StoreError(f"no store at {self.path} (nothing has been run here yet)")
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store at {self.path}: {e.strerror}") from None
        os.makedirs(self.cas, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self._lock_fd: Optional[int] = None
        self._tx_depth = 0
        self._held = False
        self._made_dirs: Set[str] = set()
        try:
            self.db = sqlite3.connect(db_path, isolation_level=None, timeout=60.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"the store database {db_path} cannot be opened ({e}). "
                "If it is damaged, move the store folder away and run again."
            ) from None

    def _migrate(self) -> None:
        row = None
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            pass
        if row is not None:
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the store at {self.path} has format version {version}, newer than this "
                    f"zenbuild understands ({SCHEMA_VERSION}). Upgrade zenbuild, or point "
                    "`store` in zenbuild.toml at another folder."
                )
            if version < SCHEMA_VERSION:
                with self.transaction():
                    for v in range(version, SCHEMA_VERSION):
                        for stmt in _MIGRATIONS[v]:
                            self.db.execute(stmt)
                    self.db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                    )
            return
        with self.transaction():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    class _Tx:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested uses join the outer one."""

        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            if self.store._tx_depth == 0:
                self.store.db.execute("BEGIN IMMEDIATE")
            self.store._tx_depth += 1
            return self.store.db

        def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
            self.store._tx_depth -= 1
            if self.store._tx_depth == 0:
                self.store.db.execute("ROLLBACK" if et else "COMMIT")

    def transaction(self) -> Store._Tx:
        return Store._Tx(self)

    def hold(self) -> None:
        """Open a transaction that later writes join until release(): a run groups the
        writes of consecutive steps into one commit (see Scheduler._finish)."""
        if not self._held:
            Store._Tx(self).__enter__()
            self._held = True

    def release(self) -> None:
        """Commit the held transaction, if any."""
        if self._held:
            self._held = False
            Store._Tx(self).__exit__(None, None, None)

    def close(self) -> None:
        self.release()
        self.unlock()
        self.db.close()

    # -- the workspace lock -----------------------------------------------------------------
    def lock(self, wait: bool = True, on_wait: Any = None) -> None:
        import fcntl

        fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise StoreLocked(
                    f"another zenbuild run (pid {holder}) is using {self.path}; "
                    "wait for it or run without --no-wait"
                ) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        """Where a file blob lives (blobs up to INLINE_MAX bytes are in the database)."""
        return os.path.join(self.cas, digest[:2], digest[2:])

    def _inline(self, digest: str) -> Optional[bytes]:
        row = self.db.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        data = row[0]
        # a damaged row may come back as text: its bytes will not match the digest
        return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)

    def has_blob(self, digest: str) -> bool:
        if self.db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone():
            return True
        return os.path.exists(self.blob_path(digest))

    def _tmpfile(self) -> Tuple[int, str]:
        name = os.path.join(self.tmp, f"{os.getpid()}-{os.urandom(16).hex()}")
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), name

    def _place(self, tmp: str, digest: str) -> None:
        final = self.blob_path(digest)
        if os.path.exists(final):
            os.unlink(tmp)
            return
        folder = os.path.dirname(final)
        if folder not in self._made_dirs:
            os.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)
        os.replace(tmp, final)

    def put_blob(self, data: bytes) -> str:
        digest = xxhash.xxh3_128_hexdigest(data)
        if len(data) <= INLINE_MAX:
            self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, data))
            return digest
        if not os.path.exists(self.blob_path(digest)):
            fd, tmp = self._tmpfile()
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self._place(tmp, digest)
            except BaseException:
                _unlink_quiet(tmp)
                raise
        return digest

    def put_file(self, path: str) -> Tuple[str, int]:
        """Copy a file into the store, hashing while copying. Returns (digest, size)."""
        with open(path, "rb") as src:
            head = src.read(INLINE_MAX + 1)
            if len(head) <= INLINE_MAX:
                return self.put_blob(head), len(head)
            h = xxhash.xxh3_128(head)
            fd, tmp = self._tmpfile()
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(head)
                    size = len(head) + hash_stream(src, h, out)
                digest = h.hexdigest()
                self._place(tmp, digest)
            except BaseException:
                _unlink_quiet(tmp)
                raise
        return digest, size

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes, verified. Raises CorruptBlob (after removing it) or KeyError."""
        data = self._inline(digest)
        if data is None:
            path = self.blob_path(digest)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise KeyError(digest) from None
        if xxhash.xxh3_128_hexdigest(data) != digest:
            self.delete_blob(digest)
            raise CorruptBlob(digest)
        return data

    def open_blob(self, digest: str) -> IO[bytes]:
        """A binary file object over the blob's bytes (not verified). Raises KeyError."""
        data = self._inline(digest)
        if data is not None:
            import io

            return io.BytesIO(data)
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise KeyError(digest) from None

    def delete_blob(self, digest: str) -> bool:
        """Remove a blob wherever it lives; False when there was none."""
        gone = self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,)).rowcount > 0
        try:
            os.unlink(self.blob_path(digest))
            gone = True
        except FileNotFoundError:
            pass
        return gone

    def restore_file(self, digest: str, dest: str, mode: Optional[int] = None) -> None:
        """Write blob ``digest`` to ``dest`` atomically, verifying it on the way."""
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = f"{dest}.zenbuild-tmp-{os.getpid()}"
        h = xxhash.xxh3_128()
        try:
            with self.open_blob(digest) as src, open(tmp, "wb") as out:
                hash_stream(src, h, out)
            if h.hexdigest() != digest:
                self.delete_blob(digest)
                raise CorruptBlob(digest)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def iter_blobs(self) -> Iterator[Tuple[str, int]]:
        """(digest, size) of every blob, in the database and under cas/."""
        yield from self.db.execute("SELECT digest, length(data) FROM blobs").fetchall()
        for d in sorted(os.listdir(self.cas)):
            sub = os.path.join(self.cas, d)
            if len(d) != 2 or not os.path.isdir(sub):
                continue
            for name in os.listdir(sub):
                try:
                    yield d + name, os.stat(os.path.join(sub, name)).st_size
                except FileNotFoundError:
                    continue

    def rehash_blob(self, digest: str) -> Optional[Tuple[str, int]]:
        """(actual digest, size) of a stored blob's bytes, or None if it is gone."""
        try:
            src = self.open_blob(digest)
        except KeyError:
            return None
        h = xxhash.xxh3_128()
        with src:
            n = hash_stream(src, h)
        return h.hexdigest(), n

    def clear_blobs(self) -> None:
        import shutil

        self.db.execute("DELETE FROM blobs")
        for name in os.listdir(self.cas):
            p = os.path.join(self.cas, name)
            if len(name) == 2 and os.path.isdir(p):
                shutil.rmtree(p)
        self._made_dirs.clear()

    # -- action cache and step state --------------------------------------------------------
    def step_states(self, pipeline: str) -> Dict[str, ActionEntry]:
        """The latest entry of every step of ``pipeline``, in one query. Their components are
        read only if asked for (a step that changed); ``value_inline`` says whether the value
        blob is in the database (else it may be a file)."""
        rows = self.db.execute(
            "SELECT a.fingerprint, a.pipeline, a.step, a.value_digest, a.outputs, a.created, "
            "a.last_used, a.duration, s.step, b.digest IS NOT NULL "
            "FROM step_state s JOIN actions a ON a.fingerprint = s.fingerprint "
            "LEFT JOIN blobs b ON b.digest = a.value_digest WHERE s.pipeline = ?",
            (pipeline,),
        ).fetchall()
        out: Dict[str, ActionEntry] = {}
        load, plain = self._components_of, "{}"
        for r in rows:
            e = ActionEntry(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] != plain else {},
                            None, r[5], r[6], r[7], load)
            e.value_inline = bool(r[9])
            out[r[8]] = e
        return out

    def _components_of(self, fingerprint: str) -> str:
        row = self.db.execute(
            "SELECT components FROM actions WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return row[0] if row else "{}"

    def get_action(self, fingerprint: str) -> Optional[ActionEntry]:
        row = self.db.execute(
            f"SELECT {_ACTION_COLS} FROM actions WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return _entry(row) if row else None

    def put_action(self, e: ActionEntry) -> None:
        with self.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO actions ({_ACTION_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    e.fingerprint,
                    e.pipeline,
                    e.step,
                    e.value_digest,
                    json.dumps(e.outputs, sort_keys=True),
                    json.dumps(e.components, sort_keys=True),
                    e.created or time.time(),
                    e.last_used or time.time(),
                    e.duration,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO step_state VALUES (?,?,?)", (e.pipeline, e.step, e.fingerprint)
            )

    def set_step_states(self, pipeline: str, states: Dict[str, str]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO step_state VALUES (?,?,?)",
            [(pipeline, s, fp) for s, fp in states.items()],
        )

    def touch_actions(self, fingerprints: Iterable[str], when: float) -> None:
        """Mark entries used at ``when`` (for `cache gc`). Callers pass only entries whose
        last_used is older than TOUCH_EVERY_S, as relatime does for atimes."""
        self.db.executemany(
            "UPDATE actions SET last_used = ? WHERE fingerprint = ?", [(when, f) for f in fingerprints]
        )

    def delete_actions(self, fingerprints: Iterable[str]) -> None:
        fps = list(fingerprints)
        with self.transaction() as db:
            db.executemany("DELETE FROM actions WHERE fingerprint = ?", [(f,) for f in fps])
            db.executemany("DELETE FROM step_state WHERE fingerprint = ?", [(f,) for f in fps])

    def actions_using(self, digest: str) -> List[str]:
        rows = self.db.execute(
            "SELECT fingerprint FROM actions WHERE value_digest = ? OR outputs LIKE ?",
            (digest, f"%{digest}%"),
        ).fetchall()
        return [r[0] for r in rows]

    # -- file digests -----------------------------------------------------------------------
    def file_records(self) -> Dict[str, Tuple[Any, ...]]:
        """path -> (size, mtime_ns, ino, ctime_ns, digest), for StatCache: every saved record
        is trusted (not racily clean), so its recording time need not be read."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, ino, ctime_ns, digest FROM files"
        ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def save_file_records(self, recs: Dict[str, FileRecord]) -> None:
        """Save the trusted records; a racily clean one will never be trusted (its mtime and
        recording time are fixed), so it is dropped, and so is the path's older row."""
        keep = {p: r for p, r in recs.items() if r.trusted_for(r.key)}
        self.db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)",
            [(p, *r.key, r.digest, r.recorded_ns) for p, r in keep.items()],
        )
        self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in recs if p not in keep])

    # -- parsed-source cache (fingerprint.SourceCache) ------------------------------------------
    def source_entry(self, key: str) -> Optional[Tuple[str, List[List[str]]]]:
        row = self.db.execute("SELECT digest, refs FROM source_cache WHERE key = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def save_source_entries(self, entries: Dict[str, Tuple[str, List[List[str]]]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO source_cache VALUES (?,?,?)",
            [(k, d, json.dumps(refs)) for k, (d, refs) in entries.items()],
        )

    # -- runs -------------------------------------------------------------------------------
    def begin_run(self, pipeline: str, params: Dict[str, Any]) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()
        self.db.execute(
            "INSERT INTO runs (id, pipeline, started, status, params) VALUES (?,?,?,?,?)",
            (run_id, pipeline, time.time(), "running", json.dumps(params, default=repr)),
        )
        return run_id

    def prune_runs(self, keep: int = RUNS_KEPT) -> None:
        """Forget all but the newest ``keep`` runs (their steps and logs too)."""
        old = self.db.execute(
            "SELECT id FROM runs ORDER BY started DESC LIMIT -1 OFFSET ?", (keep,)
        ).fetchall()
        if old:
            ids = [(r[0],) for r in old]
            self.db.executemany("DELETE FROM run_steps WHERE run_id = ?", ids)  # schema < 4
            self.db.executemany("DELETE FROM runs WHERE id = ?", ids)

    def finish_run(
        self,
        run_id: str,
        status: str,
        counts: Dict[str, int],
        steps: List[Tuple[str, str, Optional[str], float, List[str], Optional[str]]],
        log: str = "",
    ) -> None:
        self.db.execute(
            "UPDATE runs SET finished=?, status=?, executed=?, cached=?, failed=?, skipped=?, "
            "log=?, steps=? WHERE id=?",
            (
                time.time(),
                status,
                counts.get("executed", 0),
                counts.get("cached", 0),
                counts.get("failed", 0),
                counts.get("skipped", 0),
                log,
                json.dumps([list(s) for s in steps]),
                run_id,
            ),
        )

    _RUN_COLS = ("id", "pipeline", "started", "finished", "status", "executed", "cached", "failed",
                 "skipped", "params")

    def list_runs(
        self, pipeline: Optional[str] = None, prefix: str = "", limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """Runs, newest first, optionally of one pipeline and/or whose id starts with ``prefix``."""
        sql = f"SELECT {', '.join(self._RUN_COLS)} FROM runs WHERE substr(id, 1, length(?)) = ?"
        args: List[Any] = [prefix, prefix]
        if pipeline is not None:
            sql += " AND pipeline = ?"
            args.append(pipeline)
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        args.append(-1 if limit is None else limit)
        rows = self.db.execute(sql, args).fetchall()
        out = [dict(zip(self._RUN_COLS, r)) for r in rows]
        for r in out:
            r["params"] = json.loads(r["params"]) if r["params"] else {}
        return out

    def run_log(self, run_id: str) -> str:
        row = self.db.execute("SELECT log FROM runs WHERE id = ?", (run_id,)).fetchone()
        return (row[0] or "") if row else ""

    def run_steps(self, run_id: str) -> List[Dict[str, Any]]:
        """The steps of one run in the order they were recorded."""
        row = self.db.execute("SELECT steps FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None and row[0] is not None:
            rows = json.loads(row[0])
        else:  # recorded by a store of schema < 4 (or the run did not finish)
            rows = [
                [r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else [], r[5]]
                for r in self.db.execute(
                    "SELECT step, status, fingerprint, duration, reasons, error FROM run_steps "
                    "WHERE run_id = ? ORDER BY seq", (run_id,))
            ]
        return [
            {"step": r[0], "status": r[1], "fingerprint": r[2], "duration": r[3] or 0.0,
             "reasons": r[4] or [], "error": r[5]}
            for r in rows
        ]


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
