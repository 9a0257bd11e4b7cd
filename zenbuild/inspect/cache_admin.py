"""Store maintenance behind `zenbuild cache`: info, gc, verify and clear.

gc drops least recently used entries first and never a blob a kept entry needs; verify rehashes
every blob and reads every row, reporting what is damaged (and removing it with repair).
Callers hold the store's lock.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from zenbuild.digest import is_digest
from zenbuild.durations import parse_age, parse_size  # noqa: F401  (cache gc's, here before)
from zenbuild.store.actions import ACTION_COLS as _ACTION_COLS
from zenbuild.store.actions import sound
from zenbuild.store.database import BAD_TEXT
from zenbuild.store.db import Store
from zenbuild.store.runs import RUN_COLS as _RUN_COLS
from zenbuild.store.runs import sound_run, sound_steps

TMP_GRACE_S = 3600.0  # a file in STORE/tmp older than this is left over from a crashed run


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
        f"SELECT {_ACTION_COLS} FROM actions ORDER BY last_used, created, fingerprint"
    ).fetchall()
    out = []
    for r in rows:
        outputs = sound(r)
        if outputs is not None:  # a damaged row is left to `cache verify`
            out.append(Entry(r[0], r[2], r[3], outputs, r[6], r[7]))
    return out


def blob_sizes(store: Store) -> Dict[str, int]:
    return dict(store.iter_blobs())


def needs(store: Store, e: Entry, good: Optional[Set[str]] = None) -> Optional[Set[str]]:
    """The blobs ``e`` needs (value, output files, folder manifests and their files), or None
    when a folder manifest cannot be read (the entry is broken). With ``good``, manifests are
    read only from those blobs, unverified (a corrupt one is reported, not removed as get_blob
    would remove it)."""
    need = {e.value_digest}
    for rec in e.outputs.values():
        digest = str(rec["digest"])
        need.add(digest)
        if rec.get("kind") == "dir":
            if good is not None and digest not in good:
                return None
            try:
                if good is None:
                    data = store.get_blob(digest)
                else:
                    with store.open_blob(digest) as f:
                        data = f.read()
                need.update(str(m[1]) for m in json.loads(data)["files"])
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
    bad_rows: List[Tuple[str, str]] = field(default_factory=list)  # (table, what is wrong)
    repaired: bool = False

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.removed_entries or self.bad_rows)


def verify(store: Store, repair: bool = False) -> VerifyReport:
    """Rehash every blob and read every row. Report corrupt blobs, damaged rows and the entries
    that need a blob that is corrupt or missing; with ``repair``, remove them all (their steps
    execute again). Call with the store's lock held."""
    rep = VerifyReport(repaired=repair)
    bad = bad_rows(store)
    rep.bad_rows = [(table, why) for table, _rowid, why in bad]
    good: Set[str] = set()
    for digest, _size in list(store.iter_blobs()):
        if not is_digest(digest):
            continue  # a damaged row of the blobs table: reported by bad_rows
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
    drop: List[str] = []
    for e in entries(store):
        need = needs(store, e, good)
        if need is None or not need <= good:
            drop.append(e.fingerprint)
            rep.removed_entries.append((e.step, e.fingerprint))
    if repair:
        with store.transaction() as db:
            for table, rowid, _why in bad:
                db.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
            for digest in rep.corrupt:
                store.delete_blob(digest)
            if drop:
                store.delete_actions(drop)
    return rep


def bad_rows(store: Store) -> List[Tuple[str, int, str]]:
    """Damaged rows of the store's tables as (table, rowid, what is wrong): text that is not
    UTF-8, a column of the wrong type, JSON that does not parse or has the wrong shape. Each is
    a miss where it is read (the step executes and replaces it); `cache verify --repair`
    deletes them."""
    out: List[Tuple[str, int, str]] = []
    db = store.db
    for r in db.execute(f"SELECT rowid, {_ACTION_COLS} FROM actions").fetchall():
        row = tuple(r[1:])
        why = None
        if sound(row) is None:
            why = "a column is damaged"
        else:
            for col, text in (("components", row[5]), ("discovered", row[9])):
                if text is not None and not _is_json_object(text):
                    why = f"its {col} are not readable"
        if why:
            out.append(("actions", r[0], f"entry of step {_show(row[2])}: {why}"))
    for r in db.execute("SELECT rowid, pipeline, step, fingerprint FROM step_state").fetchall():
        if not all(_clean(x) for x in r[1:]):
            out.append(("step_state", r[0], "latest entry of a step: a column is damaged"))
    for r in db.execute(
        "SELECT rowid, path, digest FROM files WHERE NOT (typeof(path) = 'text' AND "
        "typeof(digest) = 'text' AND typeof(size) = 'integer' AND typeof(mtime_ns) = "
        "'integer' AND typeof(ino) = 'integer' AND typeof(ctime_ns) = 'integer')").fetchall():
        out.append(("files", r[0], f"stat-cache row of {_show(r[1])}: a column has the wrong type"))
    typed = {rowid for table, rowid, _ in out if table == "files"}  # reported once a row
    for r in db.execute("SELECT rowid, path, digest FROM files").fetchall():
        if not (_clean(r[1]) and _clean(r[2])) and r[0] not in typed:
            out.append(("files", r[0], f"stat-cache row of {_show(r[1])}: text is damaged"))
    for r in db.execute("SELECT rowid, key FROM source_cache").fetchall():
        key = r[1]
        if not _clean(key) or store.sources.get(key) is None:
            out.append(("source_cache", r[0], "parsed-source row: damaged"))
    for r in db.execute(
        "SELECT rowid FROM blobs WHERE typeof(digest) != 'text' OR length(digest) != 32 "
        "OR digest GLOB '*[^0-9a-f]*'").fetchall():
        out.append(("blobs", r[0], "inline blob row: its digest is damaged"))
    for r in db.execute(f"SELECT rowid, {', '.join(_RUN_COLS)}, steps FROM runs").fetchall():
        if not sound_run(tuple(r[1:-1])) or (r[-1] is not None and not sound_steps(r[-1])):
            out.append(("runs", r[0], f"run {_show(r[1])}: its history row is damaged"))
    return out


def _clean(x: object) -> bool:
    return isinstance(x, str) and BAD_TEXT not in x


def _show(x: object) -> str:
    return x if isinstance(x, str) else repr(x)


def _is_json_object(text: object) -> bool:
    if not _clean(text):
        return False
    try:
        return isinstance(json.loads(str(text)), dict)
    except ValueError:
        return False


def clear(store: Store) -> Tuple[int, int, int]:
    """Remove every entry and blob; returns (entries, blobs, bytes). Run history is kept."""
    es = entries(store)
    sizes = blob_sizes(store)
    store.delete_actions(e.fingerprint for e in es)
    store.clear_blobs()
    return len(es), len(sizes), sum(sizes.values())
