"""The parsed-source cache (table ``source_cache``): normalized AST digests and referenced
names per source key, so an unchanged file is never parsed again (fingerprint.SourceCache)."""

from __future__ import annotations

import json
import sqlite3
from typing import Dict, List, Optional, Tuple

SourceEntry = Tuple[str, List[List[str]]]  # (normalized AST digest, referenced names)


class SourceRows:
    """key ``{file digest}|{qualname}|{line}|{strip}`` -> SourceEntry."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str) -> Optional[SourceEntry]:
        row = self.db.execute("SELECT digest, refs FROM source_cache WHERE key = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def save(self, entries: Dict[str, SourceEntry]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO source_cache VALUES (?,?,?)",
            [(k, d, json.dumps(refs)) for k, (d, refs) in entries.items()],
        )
