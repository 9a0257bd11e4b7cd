"""The stat cache's rows (table ``files``): loaded in bulk by a run, saved only once trusted.

A path is a row's text as it is. A file name that is not UTF-8 (Linux names are bytes; Python
hands them over with surrogate escapes, ``'caf\\udce9.csv'``) cannot be SQLite text: its row's
path is ODD_MARK followed by the name as a JSON string (``\\udce9``), which loses nothing and
names no real file (no path holds a NUL)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Dict, List, Tuple

from zenbuild.digest import FileRecord
from zenbuild.store.database import BAD_TEXT

ODD_MARK = "\0"  # what a row's path starts with when the name is not UTF-8 (see row_path)
_ODD_END = "\x01"  # the first text after every ODD_MARK path (a range of the path index)


def row_path(path: str) -> str:
    """The ``files.path`` text of ``path``: itself, or ODD_MARK + JSON when it is not UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return ODD_MARK + json.dumps(path)
    return path


def _from_row(text: str) -> Any:
    """The path an ODD_MARK row's text stands for, or None when it is damaged."""
    try:
        path = json.loads(text[len(ODD_MARK):])
    except ValueError:
        return None
    return path if type(path) is str else None


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
            out = {r[0]: r[1:] for r in rows if bad not in r[5]}
        except TypeError:  # a digest that is not text at all
            out = {r[0]: r[1:] for r in rows if type(r[5]) is str and bad not in r[5]}
        # the rows of names that are not UTF-8: one look in the path index, none when no
        # such file was ever seen (the common case costs no check a row above)
        odd = self.db.execute("SELECT path FROM files WHERE path >= ? AND path < ?",
                              (ODD_MARK, _ODD_END)).fetchall()
        for (text,) in odd:
            row = out.pop(text, None)
            path = _from_row(text) if type(text) is str else None
            if row is not None and path is not None:
                out[path] = row
        return out

    def save(self, recs: Dict[str, FileRecord]) -> None:
        """Save the trusted records; a racily clean one will never be trusted (its mtime and
        recording time are fixed), so it is dropped, and so is the path's older row."""
        keep = {p: r for p, r in recs.items() if r.trusted_for(r.key)}
        gone = [p for p in recs if p not in keep]
        rows = [(p, *r.key, r.digest, r.recorded_ns) for p, r in keep.items()]
        try:  # every name UTF-8 (the usual case): no look at each path
            self._write(rows, gone)
        except UnicodeEncodeError:  # a name that is not: written again, in its row form
            # (rows written before the error are in the same transaction, and are written
            # again the same: INSERT OR REPLACE, DELETE)
            self._write([(row_path(r[0]), *r[1:]) for r in rows], [row_path(p) for p in gone])

    def _write(self, rows: List[Tuple[Any, ...]], gone: List[str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)", rows)
        self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
