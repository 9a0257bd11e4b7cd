"""The Store facade: one object over a store folder, delegating to one small class per concern.

On-disk layout (docs/store-format.md; its two versions, SCHEMA_VERSION for the database and
STORE_FORMAT for what fingerprints point at, are in schema.py):
  STORE/cas/ab/cdef...   blob named by the xxh3-128 hex digest of its bytes; written to
                         STORE/tmp/ then renamed into place; verified against its name before
                         first use (then trusted while its stat is unchanged: blobs.map)
  STORE/zenbuild.db      SQLite (WAL), tables in schema.py; meta.schema_version = SCHEMA_VERSION
  STORE/lock             flock()ed by a run for the workspace

The concerns, each its own module: schema (tables, version, migrations), database (the
connection and transactions), blobs, actions (action cache and step state), statrows (stat-cache
rows), sources (parsed-source cache), runs (run history), lock (the workspace lock).
"""

from __future__ import annotations

import os
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from zenbuild.digest import FileRecord, StatCache
from zenbuild.errors import StoreError
from zenbuild.store.actions import TOUCH_EVERY_S, ActionCache, ActionEntry
from zenbuild.store.blobs import INLINE_MAX, BlobStore, StoredValue
from zenbuild.store.database import Database, Transaction
from zenbuild.store.lock import WorkspaceLock
from zenbuild.store.runs import RUNS_KEPT, RunHistory, StepRow
from zenbuild.store.schema import SCHEMA_VERSION, STORE_FORMAT
from zenbuild.store.sources import SourceEntry, SourceRows
from zenbuild.store.statrows import StatRows

__all__ = [
    "INLINE_MAX", "RUNS_KEPT", "SCHEMA_VERSION", "STORE_FORMAT", "TOUCH_EVERY_S",
    "ActionEntry", "Store",
]


class Store:
    """A store directory. Open it with ``Store(path)``; close it with ``close()``.

    The parts are public for code that wants one concern (``blobs``, ``actions``, ``stat_rows``,
    ``sources``, ``runs``, ``workspace_lock``, ``database``); the methods below keep the one
    API every caller uses. ``db`` is the SQLite connection (for `cache` admin queries)."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.cas = os.path.join(self.path, "cas")
        self.tmp = os.path.join(self.path, "tmp")
        if not os.path.isdir(self.path):
            if not create:
                raise StoreError(f"no store at {self.path} (nothing has been run here yet)")
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store at {self.path}: {e.strerror}") from None
        os.makedirs(self.cas, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.workspace_lock = WorkspaceLock(self.path)
        self.database = Database(os.path.join(self.path, "zenbuild.db"), self.path)
        self.db = self.database.conn
        self.blobs = BlobStore(self.db, self.cas, self.tmp)
        self.actions = ActionCache(self.database)
        self.stat_rows = StatRows(self.db)
        self.sources = SourceRows(self.db)
        self.runs = RunHistory(self.db)

    # -- transactions and closing -----------------------------------------------------------
    def transaction(self) -> Transaction:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested uses join the outer one."""
        return self.database.transaction()

    def hold(self) -> None:
        """Open a transaction that later writes join until release() (group commit)."""
        self.database.hold()

    def release(self) -> None:
        """Commit the held transaction, if any."""
        self.database.release()

    def close(self) -> None:
        try:
            self.database.close()  # closes the connection even when the held COMMIT fails
        finally:
            self.workspace_lock.release()

    # -- the workspace lock -----------------------------------------------------------------
    def lock(self, wait: bool = True, on_wait: Optional[Callable[[str], object]] = None) -> None:
        self.workspace_lock.acquire(wait, on_wait)

    def unlock(self) -> None:
        self.workspace_lock.release()

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        return self.blobs.path(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def put_blob(self, data: bytes) -> str:
        return self.blobs.put(data)

    def put_file(self, path: str, private: bool = False) -> Tuple[str, int]:
        return self.blobs.put_file(path, private)

    def put_value(self, data: Any) -> str:
        """Store a value's encoding: bytes, or its parts (serialize.buffers.Encoded.parts), or
        a StoredValue a worker already wrote here (``adopt_value``)."""
        if isinstance(data, StoredValue):
            return self.blobs.adopt(data)
        return self.blobs.put(data) if isinstance(data, bytes) else self.blobs.put_parts(data)

    def adopt_value(self, stored: StoredValue) -> str:
        """A value a worker of this run wrote into this store (blobs.write_parts), taken as
        verified. Raises KeyError when it is not here (the worker saw another store)."""
        return self.blobs.adopt(stored)

    def map_blob(self, digest: str, stamps: Optional[StatCache] = None) -> Any:
        """A blob verified and mapped copy-on-write (bytes when inline); see BlobStore.map."""
        return self.blobs.map(digest, stamps)

    def get_blob(self, digest: str) -> bytes:
        return self.blobs.get(digest)

    def open_blob(self, digest: str) -> IO[bytes]:
        return self.blobs.open(digest)

    def delete_blob(self, digest: str) -> bool:
        return self.blobs.delete(digest)

    def restore_file(self, digest: str, dest: str, mode: Optional[int] = None,
                     stamps: Optional[StatCache] = None) -> None:
        self.blobs.restore_file(digest, dest, mode, stamps)

    def iter_blobs(self) -> Iterator[Tuple[str, int]]:
        return self.blobs.iter()

    def rehash_blob(self, digest: str) -> Optional[Tuple[str, int]]:
        return self.blobs.rehash(digest)

    def clear_blobs(self) -> None:
        self.blobs.clear()

    # -- action cache and step state --------------------------------------------------------
    def step_states(self, pipeline: str) -> Dict[str, ActionEntry]:
        return self.actions.step_states(pipeline)

    def get_action(self, fingerprint: str) -> Optional[ActionEntry]:
        return self.actions.get(fingerprint)

    def put_action(self, e: ActionEntry) -> None:
        self.actions.put(e)

    def alternate_actions(self, fingerprint: str) -> List[ActionEntry]:
        return self.actions.alternates(fingerprint)

    def demote_action(self, fingerprint: str, unless: Optional[str] = None) -> None:
        self.actions.demote(fingerprint, unless)

    def promote_action(self, alternate: str, fingerprint: str) -> None:
        self.actions.promote(alternate, fingerprint)

    def set_step_states(self, pipeline: str, states: Dict[str, str]) -> None:
        self.actions.set_step_states(pipeline, states)

    def drop_step_states(self, pipeline: str, steps: Iterable[str]) -> None:
        self.actions.drop_step_states(pipeline, steps)

    def outputs_of_other_pipelines(self, pipeline: str) -> List[str]:
        return self.actions.outputs_of_others(pipeline)

    def touch_actions(self, fingerprints: Iterable[str], when: float) -> None:
        self.actions.touch(fingerprints, when)

    def delete_actions(self, fingerprints: Iterable[str]) -> None:
        self.actions.delete(fingerprints)

    def outputs_recorded_at(self, path: str) -> List[Dict[str, Any]]:
        return self.actions.recorded_at(path)

    def actions_using(self, digest: str) -> List[str]:
        return self.actions.using(digest)

    # -- stat-cache rows and the parsed-source cache -----------------------------------------
    def file_records(self) -> Dict[str, Tuple[Any, ...]]:
        return self.stat_rows.load()

    def save_file_records(self, recs: Dict[str, FileRecord]) -> None:
        self.stat_rows.save(recs)

    def source_entry(self, key: str) -> Optional[SourceEntry]:
        return self.sources.get(key)

    def save_source_entries(self, entries: Dict[str, SourceEntry]) -> None:
        self.sources.save(entries)

    # -- runs -------------------------------------------------------------------------------
    def begin_run(self, pipeline: str, params: Dict[str, Any]) -> str:
        return self.runs.begin(pipeline, params)

    def prune_runs(self, keep: int = RUNS_KEPT) -> None:
        self.runs.prune(keep)

    def finish_run(
        self, run_id: str, status: str, counts: Dict[str, int], steps: List[StepRow], log: str = ""
    ) -> None:
        self.runs.finish(run_id, status, counts, steps, log)

    def list_runs(
        self, pipeline: Optional[str] = None, prefix: str = "", limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        return self.runs.list(pipeline, prefix, limit)

    def run_log(self, run_id: str) -> str:
        return self.runs.log(run_id)

    def run_steps(self, run_id: str) -> List[Dict[str, Any]]:
        return self.runs.steps(run_id)
