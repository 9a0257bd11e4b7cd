"""Declared outputs: capture them into the store after a step runs, check and restore them on a
cache hit. A folder output is stored as a manifest blob listing its files' blobs."""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

from zenbuild.digest import StatCache, stat_key
from zenbuild.store.db import INLINE_MAX, Store


class OutputMissing(Exception):
    """A step finished without writing an Output it declared."""


def _walk_files(base: str) -> List[str]:
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for fn in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, fn), base).replace(os.sep, "/"))
    return sorted(found)


def capture(root: str, rel: str, store: Store, statcache: StatCache) -> Dict[str, Any]:
    """Store the output at ``rel``; returns its record {"kind", "digest", "size"}."""
    full = os.path.join(root, rel)
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputMissing(rel) from None
    if stat.S_ISREG(st.st_mode):
        digest, size = _put(store, statcache, rel, full, st)
        return {"kind": "file", "digest": digest, "size": size,
                "exec": bool(st.st_mode & stat.S_IXUSR)}
    if stat.S_ISDIR(st.st_mode):
        manifest: List[List[Any]] = []
        total = 0
        for inner in _walk_files(full):
            p = os.path.join(full, inner)
            ist = os.stat(p)
            digest, size = _put(store, statcache, f"{rel}/{inner}", p, ist)
            manifest.append([inner, digest, size, bool(ist.st_mode & stat.S_IXUSR)])
            total += size
        mdigest = store.put_blob(json.dumps({"files": manifest}, sort_keys=True).encode())
        return {"kind": "dir", "digest": mdigest, "size": total}
    raise OutputMissing(rel)


def _put(store: Store, statcache: StatCache, rel: str, full: str, st: os.stat_result) -> Tuple[str, int]:
    if st.st_size <= INLINE_MAX:
        # One read to hash and store a small file; an fstat of it then tells both that the
        # read got all of it and that it did not change since ``st`` (else: the slow path).
        read_ns = statcache.clock()  # the stat cache's clock: racy-clean is judged by it
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, INLINE_MAX + 1)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        key = stat_key(st)
        if len(data) == after.st_size <= INLINE_MAX and stat_key(after) == key:
            digest = store.put_blob(data)
            statcache.remember(rel, key, digest, read_ns)
            return digest, len(data)
        digest, size = store.put_file(full)
        statcache.record(rel, full, digest, before=st)
        return digest, size
    digest, size = statcache.digest(rel, full, st)
    if not store.has_blob(digest):
        digest, size = store.put_file(full)
    return digest, size


def _manifest(store: Store, digest: str) -> List[List[Any]]:
    return list(json.loads(store.get_blob(digest))["files"])


def plan_restore(
    root: str, outputs: Dict[str, Dict[str, Any]], store: Store, statcache: StatCache
) -> Tuple[List[Tuple[str, str, bool]], Optional[str]]:
    """Files to restore as (rel, digest, exec), or a reason why the entry cannot be served.
    A digest of "" means: remove this file. A folder output must hold exactly its manifest's
    files, so files another run of the step left there (say, with other params) are removed;
    otherwise a step reading the folder would see them and differ from a clean build."""
    todo: List[Tuple[str, str, bool]] = []
    for rel, rec in sorted(outputs.items()):
        if rec["kind"] == "file":
            files = [(rel, rec["digest"], bool(rec.get("exec")))]
        else:
            try:
                files = [(f"{rel}/{m[0]}", m[1], bool(m[3])) for m in _manifest(store, rec["digest"])]
            except (KeyError, ValueError):
                return [], f"output {rel}: its stored manifest is missing from the store"
            base = os.path.join(root, rel)
            if os.path.isdir(base):
                expected = {f[0] for f in files}
                todo.extend(
                    (f"{rel}/{inner}", "", False)
                    for inner in _walk_files(base)
                    if f"{rel}/{inner}" not in expected
                )
        for frel, digest, ex in files:
            full = os.path.join(root, frel)
            try:
                current, _ = statcache.digest(frel, full)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                current = None
            if current == digest:
                continue
            if not store.has_blob(digest):
                what = "missing" if current is None else "changed"
                return [], f"output {frel} is {what} and its stored copy is gone"
            todo.append((frel, digest, ex))
    return todo, None


def restore(root: str, todo: List[Tuple[str, str, bool]], store: Store, statcache: StatCache) -> None:
    for frel, digest, ex in todo:
        full = os.path.join(root, frel)
        if not digest:
            os.unlink(full)
            statcache.forget([frel])
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            import shutil

            shutil.rmtree(full)
        store.restore_file(digest, full, 0o755 if ex else 0o644)
        statcache.record(frel, full, digest)
