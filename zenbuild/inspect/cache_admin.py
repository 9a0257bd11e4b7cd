"""Store maintenance behind `zenbuild cache`: info, gc, verify and clear.

gc drops least recently used entries first and never a blob a kept entry needs; verify rehashes
every blob. Callers hold the store's lock.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from zenbuild.errors import ConfigError
from zenbuild.store.db import Store

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
          "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4,
          "TB": 1024**4, "TIB": 1024**4}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TMP_GRACE_S = 3600.0  # a file in STORE/tmp older than this is left over from a crashed run


def parse_size(text: str) -> int:
    """"5GB" -> bytes. Units are binary (1 KB = 1024 B), as `du -h` counts."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ConfigError(f"size {text!r}: expected a number and a unit, such as 500MB or 5GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_age(text: str) -> float:
    """"30d" -> seconds. Units: s, m, h, d, w."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ConfigError(f"age {text!r}: expected a number and a unit (s, m, h, d, w), such as 30d")
    return float(m.group(1)) * _AGES[m.group(2)]


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass
class Entry:
    fingerprint: str
    step: str
    value_digest: str
    outputs: Dict[str, Dict[str, object]]
    created: float
    last_used: float


def entries(store: Store) -> List[Entry]:
    """Every action-cache entry, least recently used first."""
    rows = store.db.execute(
        "SELECT fingerprint, step, value_digest, outputs, created, last_used FROM actions "
        "ORDER BY last_used, created, fingerprint"
    ).fetchall()
    return [Entry(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]


def blob_sizes(store: Store) -> Dict[str, int]:
    return dict(store.iter_blobs())


def needs(store: Store, e: Entry) -> Optional[Set[str]]:
    """The blobs ``e`` needs (value, output files, folder manifests and their files), or None
    when a folder manifest cannot be read (the entry is broken)."""
    need = {e.value_digest}
    for rec in e.outputs.values():
        digest = str(rec["digest"])
        need.add(digest)
        if rec.get("kind") == "dir":
            try:
                need.update(str(f[1]) for f in json.loads(store.get_blob(digest))["files"])
            except Exception:  # missing, corrupt (removed by get_blob) or malformed
                return None
    return need


@dataclass
class Info:
    entries: int
    blobs: int
    blob_bytes: int
    db_bytes: int
    unreferenced_blobs: int
    oldest_created: Optional[float]
    least_recently_used: Optional[float]
    steps: Dict[str, int] = field(default_factory=dict)


def info(store: Store) -> Info:
    es = entries(store)
    sizes = blob_sizes(store)
    used: Set[str] = set()
    for e in es:
        used |= needs(store, e) or set()
    db = sum(os.path.getsize(os.path.join(store.path, f)) for f in os.listdir(store.path)
             if f.startswith("zenbuild.db"))
    steps: Dict[str, int] = {}
    for e in es:
        steps[e.step] = steps.get(e.step, 0) + 1
    return Info(
        entries=len(es), blobs=len(sizes), blob_bytes=sum(sizes.values()), db_bytes=db,
        unreferenced_blobs=len(set(sizes) - used),
        oldest_created=min((e.created for e in es), default=None),
        least_recently_used=es[0].last_used if es else None, steps=steps,
    )


@dataclass
class GcReport:
    removed_entries: int = 0
    broken_entries: int = 0
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_entries: int = 0
    kept_bytes: int = 0


def gc(store: Store, max_size: Optional[int] = None, older_than: Optional[float] = None,
       now: Optional[float] = None) -> GcReport:
    """Drop entries unused for ``older_than`` seconds, then least recently used entries until
    the blobs the rest need fit in ``max_size`` bytes; then delete every blob no kept entry
    needs. Call with the store's lock held."""
    now = time.time() if now is None else now
    rep = GcReport()
    sizes = blob_sizes(store)
    drop: List[str] = []
    kept: List[Tuple[Entry, Set[str]]] = []
    for e in entries(store):
        need = needs(store, e)
        if need is None or not need <= sizes.keys():
            rep.broken_entries += 1
            drop.append(e.fingerprint)
        elif older_than is not None and e.last_used < now - older_than:
            drop.append(e.fingerprint)
        else:
            kept.append((e, need))
    refs: Dict[str, int] = {}
    for _, need in kept:
        for d in need:
            refs[d] = refs.get(d, 0) + 1
    total = sum(sizes[d] for d in refs)
    i = 0
    while max_size is not None and total > max_size and i < len(kept):
        e, need = kept[i]  # least recently used first
        drop.append(e.fingerprint)
        for d in need:
            refs[d] -= 1
            if refs[d] == 0:
                del refs[d]
                total -= sizes[d]
        i += 1
    kept = kept[i:]
    if drop:
        store.delete_actions(drop)
    rep.removed_entries = len(drop) - rep.broken_entries
    for digest, size in sizes.items():
        if digest not in refs:
            if not store.delete_blob(digest):
                continue
            rep.removed_blobs += 1
            rep.freed_bytes += size
    _clean_tmp(store, now)
    rep.kept_entries = len(kept)
    rep.kept_bytes = total
    return rep


def _clean_tmp(store: Store, now: float) -> None:
    for name in os.listdir(store.tmp):
        p = os.path.join(store.tmp, name)
        try:
            if os.stat(p).st_mtime < now - TMP_GRACE_S:
                os.unlink(p)
        except OSError:
            pass


@dataclass
class VerifyReport:
    checked: int = 0
    checked_bytes: int = 0
    corrupt: List[str] = field(default_factory=list)
    removed_entries: List[Tuple[str, str]] = field(default_factory=list)  # (step, fingerprint)


def verify(store: Store) -> VerifyReport:
    """Rehash every blob; remove the corrupt ones and every entry that needs a blob that is
    corrupt or missing. Call with the store's lock held."""
    rep = VerifyReport()
    good: Set[str] = set()
    for digest, _size in list(store.iter_blobs()):
        found = store.rehash_blob(digest)
        if found is None:
            continue
        got, n = found
        rep.checked += 1
        rep.checked_bytes += n
        if got == digest:
            good.add(digest)
        else:
            rep.corrupt.append(digest)
            store.delete_blob(digest)
    drop: List[str] = []
    for e in entries(store):
        need = needs(store, e)
        if need is None or not need <= good:
            drop.append(e.fingerprint)
            rep.removed_entries.append((e.step, e.fingerprint))
    if drop:
        store.delete_actions(drop)
    return rep


def clear(store: Store) -> Tuple[int, int, int]:
    """Remove every entry and blob; returns (entries, blobs, bytes). Run history is kept."""
    es = entries(store)
    sizes = blob_sizes(store)
    store.delete_actions(e.fingerprint for e in es)
    store.clear_blobs()
    return len(es), len(sizes), sum(sizes.values())
