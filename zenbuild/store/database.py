"""The store's SQLite connection and its transactions: nested ones join, and a run may hold
one open across steps (group commit)."""

from __future__ import annotations

import sqlite3
from typing import Any

from zenbuild.errors import StoreError
from zenbuild.store.schema import migrate


class Database:
    """One connection in WAL mode, migrated to the current schema when opened."""

    def __init__(self, db_path: str, store_path: str) -> None:
        self._depth = 0
        self._held = False
        try:
            self.conn = sqlite3.connect(db_path, isolation_level=None, timeout=60.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            migrate(self.conn, store_path)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"the store database {db_path} cannot be opened ({e}). "
                "If it is damaged, move the store folder away and run again."
            ) from None

    def begin(self) -> None:
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth += 1

    def end(self, ok: bool) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.conn.execute("COMMIT" if ok else "ROLLBACK")

    def transaction(self) -> Transaction:
        return Transaction(self)

    def hold(self) -> None:
        """Open a transaction that later writes join until release(): a run groups the
        writes of consecutive steps into one commit (see Scheduler._finish)."""
        if not self._held:
            self.begin()
            self._held = True

    def release(self) -> None:
        """Commit the held transaction, if any."""
        if self._held:
            self._held = False
            self.end(True)

    def close(self) -> None:
        self.release()
        self.conn.close()


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested uses join the outer one."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def __enter__(self) -> sqlite3.Connection:
        self.database.begin()
        return self.database.conn

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self.database.end(et is None)
