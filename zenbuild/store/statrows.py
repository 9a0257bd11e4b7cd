"""The stat cache's rows (table ``files``): loaded in bulk by a run, saved only once trusted."""

from __future__ import annotations

import sqlite3
from typing import Any, Dict, Tuple

from zenbuild.digest import FileRecord
from zenbuild.store.database import BAD_TEXT


class StatRows:
    """path -> (size, mtime_ns, ino, ctime_ns, digest, recorded_ns) for digest.StatCache."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def load(self) -> Dict[str, Tuple[Any, ...]]:
        """path -> (size, mtime_ns, ino, ctime_ns, digest), for StatCache: every saved record
        is trusted (not racily clean), so its recording time need not be read. A damaged row
        (text that is not UTF-8, a column of the wrong type) is left out: its file is hashed
        again and the row replaced."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, ino, ctime_ns, digest FROM files").fetchall()
        bad = BAD_TEXT
        try:  # one check a row: a digest that is not clean text (a stat that is not ints never
            # matches a file's, and a path that is not clean text never names one)
            return {r[0]: r[1:] for r in rows if bad not in r[5]}
        except TypeError:  # a digest that is not text at all
            return {r[0]: r[1:] for r in rows if type(r[5]) is str and bad not in r[5]}

    def save(self, recs: Dict[str, FileRecord]) -> None:
        """Save the trusted records; a racily clean one will never be trusted (its mtime and
        recording time are fixed), so it is dropped, and so is the path's older row."""
        keep = {p: r for p, r in recs.items() if r.trusted_for(r.key)}
        self.db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)",
            [(p, *r.key, r.digest, r.recorded_ns) for p, r in keep.items()],
        )
        self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in recs if p not in keep])

