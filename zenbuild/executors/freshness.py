"""Worker side: a process that serves task after task (a Dask worker that outlives runs)
imports the project's modules again when their files changed, so a step never runs with the
helpers, classes or steps of an earlier run under the fingerprint of the new ones."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
from typing import Dict, Iterator, Optional, Tuple

StatKey = Tuple[int, int, int, int]  # mtime_ns, ctime_ns, size, inode

# Project modules this process has imported: name -> (file, its stat when noted; None when it
# may have changed after it was imported, which makes it stale at the next task).
_SEEN: Dict[str, Tuple[str, Optional[StatKey]]] = {}
_SCANNED = -1  # len(sys.modules) when it was last scanned for new ones
_LOCK = threading.Condition()
_ACTIVE = 0  # tasks of this process running now (a Dask worker may run several threads)
_SESSION: Optional[str] = None  # the run (executor) whose tasks this process serves now


def _stat_key(path: str) -> Optional[StatKey]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


def _note_new(root: str, since_ns: Optional[int] = None) -> None:
    """Note the stat of every project module (a file under ``root`` outside site-packages)
    not seen yet; ``since_ns``: one whose file changed at or after it (a module imported
    while the task ran, perhaps before an edit during it) is noted as unknown."""
    global _SCANNED
    if len(sys.modules) == _SCANNED:
        return
    prefix = root.rstrip(os.sep) + os.sep
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if (name in _SEEN or not isinstance(path, str) or not path.startswith(prefix)
                or "site-packages" in path or "dist-packages" in path):
            continue
        key = _stat_key(path)
        if since_ns is not None and key is not None and key[0] >= since_ns:
            key = None
        _SEEN[name] = (path, key)
    _SCANNED = len(sys.modules)


def _stale() -> bool:
    return any(sys.modules.get(name) is None or key is None or _stat_key(path) != key
               for name, (path, key) in _SEEN.items())


def _drop() -> int:
    global _SCANNED
    names = list(_SEEN)
    for name in names:
        sys.modules.pop(name, None)
    _SEEN.clear()
    _SCANNED = -1
    importlib.invalidate_caches()
    # what memoized project code read (trace/memo.py) belonged to the modules just dropped:
    # their code objects compare equal to the new ones', whose caches start empty; kept,
    # an old read would make the next step's trace start before it, uncached every time
    from zenbuild.trace import memo

    memo.forget()
    return len(names)


@contextlib.contextmanager
def fresh_project(root: str, session: Optional[str] = None) -> Iterator[None]:
    """Around one task (unpickling its arguments, importing and running its step): first, if
    any project module this process imported changed on disk since (one stat each), forget
    them all, so that what the task imports is read from the files as they are now; a
    process running other tasks in other threads waits for them to finish first. Afterwards,
    note the modules the task imported. ``root`` goes first on sys.path. A task of another
    ``session`` (a new run on a Dask cluster that outlives runs) forgets them too, as a new
    process would: what a module read when it was imported (a config file), or memoized
    (an lru_cache loader), is read again, not the previous run's."""
    global _ACTIVE, _SESSION
    if root not in sys.path:
        sys.path.insert(0, root)
    started = time.time_ns()
    with _LOCK:
        _note_new(root)
        while _stale() or (session is not None and session != _SESSION and _SEEN):
            if _ACTIVE == 0:
                _drop()
                break
            _LOCK.wait()
        if session is not None:
            _SESSION = session
        _ACTIVE += 1
    try:
        yield
    finally:
        with _LOCK:
            _note_new(root, started)
            _ACTIVE -= 1
            _LOCK.notify_all()
