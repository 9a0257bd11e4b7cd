"""The parsed-source cache (table ``source_cache``): normalized AST digests and referenced
names per source key, so an unchanged file is never parsed again (fingerprint.SourceCache)."""

from __future__ import annotations

import json
import sqlite3
from typing import Dict, List, Optional, Tuple

from zenbuild.store.database import BAD_TEXT

SourceEntry = Tuple[str, List[List[str]]]  # (normalized AST digest, referenced names)


class SourceRows:
    """key ``{file digest}|{qualname}|{line}|{strip}`` -> SourceEntry."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str) -> Optional[SourceEntry]:
        """The entry, or None when there is none or its row is damaged (it is made again)."""
        row = self.db.execute("SELECT digest, refs FROM source_cache WHERE key = ?", (key,)).fetchone()
        if row is None or type(row[0]) is not str or BAD_TEXT in row[0] or type(row[1]) is not str:
            return None
        try:
            refs = json.loads(row[1])
        except ValueError:
            return None
        if not (isinstance(refs, list)
                and all(isinstance(r, list) and all(type(x) is str for x in r) for r in refs)):
            return None
        return row[0], refs

    def save(self, entries: Dict[str, SourceEntry]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO source_cache VALUES (?,?,?)",
            [(k, d, json.dumps(refs)) for k, (d, refs) in entries.items()],
        )
