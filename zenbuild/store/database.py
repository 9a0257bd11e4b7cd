"""The store's SQLite connection and its transactions: nested ones join, and a run may hold
one open across steps (group commit). Damage is turned into errors a person can act on: a
database that cannot be read at all (garbage in its pages, not a database) is a StoreError
saying to move the store folder away; a full disk is DiskFull; a row whose text is not UTF-8
is fetched again with its bad bytes replaced (U+FFFD), for the table's reader to drop as bad."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, List, Optional

from zenbuild.errors import StoreError
from zenbuild.store.schema import migrate

BAD_TEXT = "\ufffd"  # what a byte that is not UTF-8 becomes in a text column


class DiskFull(StoreError):
    """The disk holding the store is full. A step whose result cannot be stored fails."""

    exit_code = 1


class StoreDamaged(StoreError):
    """The store database cannot be read at all."""


def damaged_message(where: str, e: BaseException) -> str:
    return (f"the store database {where} is damaged and cannot be read ({e}). Move the store "
            "folder away (or delete it) and run again: every step will execute once. Delete the "
            "outputs the old store made as well: a new store takes over no existing file.")


def full_message(where: str, what: str = "", need: Optional[int] = None) -> str:
    size = f" (about {_human(need)} needed)" if need else ""
    thing = f" while writing {what}" if what else ""
    return (f"no space left on the device holding {where}{thing}{size}. Free some space "
            "(`zenbuild cache gc --max-size ...` trims the store) and run again.")


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1024 or unit == "GB":
            return f"{int(x)} B" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"  # pragma: no cover


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    name = getattr(e, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or type(e) is sqlite3.DatabaseError


def _is_full(e: sqlite3.DatabaseError) -> bool:
    return getattr(e, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(e)


def _no_room(folder: str) -> bool:
    """Whether the disk holding ``folder`` is (all but) full: SQLite reports a full disk
    while opening as an I/O error."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < 256 * 1024
    except OSError:
        return False


def _is_bad_text(e: sqlite3.DatabaseError) -> bool:
    return isinstance(e, sqlite3.OperationalError) and "Could not decode" in str(e)


def _lenient(b: bytes) -> str:
    return b.decode("utf-8", "replace")


class SafeCursor(sqlite3.Cursor):
    """A cursor whose damage errors are StoreErrors, and whose rows with text that is not UTF-8
    are fetched again with the bad bytes replaced by BAD_TEXT."""

    where = ""
    lenient = False  # the rows were fetched again, bad bytes replaced: check their text
    # Python 3.10's sqlite3 fetches the first row inside execute(): a row with bad text fails
    # there, and the rows fetched again wait here for fetchall/fetchone
    _early: Optional[List[Any]] = None

    def _error(self, e: sqlite3.DatabaseError) -> Optional[StoreError]:
        """The StoreError that stands for ``e``, or None: re-raise ``e`` itself. (Callers
        re-raise with a bare ``raise``: ``raise e`` from a helper left the helper's frame, which
        holds ``e``, in e's traceback, a reference cycle that kept every frame above it and
        their locals, a whole run's graph and results, alive until the cyclic GC ran.)"""
        if _is_full(e):
            return DiskFull(full_message(self.where, "the store database"))
        if _is_damage(e):
            return StoreDamaged(damaged_message(self.where, e))
        return None

    def _raise(self, e: sqlite3.DatabaseError) -> None:
        """Raise what stands for ``e`` (for a caller outside an ``except`` block)."""
        err = self._error(e)
        if err is not None:
            raise err from None
        raise e

    def execute(self, sql: str, parameters: Any = (), /) -> SafeCursor:  # type: ignore[override]
        self._sql, self._args = sql, parameters
        try:
            super().execute(sql, parameters)
        except sqlite3.DatabaseError as e:
            if _is_bad_text(e):  # Python 3.10 (see _early)
                self._early = self._again()
                return self
            err = self._error(e)
            if err is None:
                raise
            raise err from None
        return self

    def executemany(self, sql: str, seq: Iterable[Any], /) -> SafeCursor:  # type: ignore[override]
        try:
            super().executemany(sql, seq)
        except sqlite3.DatabaseError as e:
            err = self._error(e)
            if err is None:
                raise
            raise err from None
        return self

    def _again(self) -> List[Any]:
        self.lenient = True
        conn = self.connection
        old = conn.text_factory
        conn.text_factory = _lenient
        try:
            cur = sqlite3.Cursor.execute(conn.cursor(), self._sql, self._args)
            return cur.fetchall()
        finally:
            conn.text_factory = old

    def fetchall(self) -> List[Any]:
        if self._early is not None:
            rows, self._early = self._early, None
            return rows
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as e:
            if not _is_bad_text(e):
                err = self._error(e)
                if err is None:
                    raise
                raise err from None
            return self._again()

    def fetchone(self) -> Any:
        if self._early is not None:
            return self._early.pop(0) if self._early else None
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as e:
            if not _is_bad_text(e):
                err = self._error(e)
                if err is None:
                    raise
                raise err from None
            rows = self._again()
            return rows[0] if rows else None

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class SafeConnection(sqlite3.Connection):
    """A connection whose ``execute`` and ``executemany`` go through SafeCursor."""

    where = ""

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        cur = super().cursor(factory or SafeCursor)
        cur.where = self.where
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        cur = _new_cursor(self, SafeCursor)  # what cursor() does, a call less (per statement)
        cur.where = self.where
        return cur.execute(sql, parameters)

    def executemany(self, sql: str, seq: Iterable[Any], /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, seq)


_new_cursor = sqlite3.Connection.cursor


def connect(db_path: str, timeout: float = 60.0) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=timeout,
                           factory=SafeConnection)
    conn.where = db_path  # type: ignore[attr-defined]
    return conn


class Database:
    """One connection in WAL mode, migrated to the current schema when opened."""

    def __init__(self, db_path: str, store_path: str) -> None:
        self._depth = 0
        self._held = False
        self.path = db_path
        try:
            self.conn = connect(db_path)
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                migrate(self.conn, store_path)
            except BaseException:
                # no Database is made, so nothing else would close it (a store of a newer
                # format, a damaged one, a full disk): Python 3.13 warns of the leak
                self.conn.close()
                raise
        except sqlite3.DatabaseError as e:
            if _is_full(e) or _no_room(store_path):
                raise DiskFull(full_message(db_path, "the store database")) from None
            raise StoreDamaged(
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
            if not ok:
                self._rollback()
                return
            try:
                self.conn.execute("COMMIT")
            except StoreError:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """ROLLBACK, if a transaction is still open (SQLite may have ended it already)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except (sqlite3.Error, StoreError):
                pass

    def abandon(self) -> None:
        """Drop whatever transaction is open (after a failed write), so the next one starts
        clean; the held transaction, if any, is given up with it."""
        self._depth = 0
        self._held = False
        self._rollback()

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
        try:
            self.release()
        finally:
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
