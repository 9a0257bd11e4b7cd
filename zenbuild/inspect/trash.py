"""STORE/trash/TIME-PID/: what is there (for `cache info`) and pruning it (`cache gc`).

The trash holds the user's own versions of outputs (a hand edit, an added file) that a restore
moved aside (store.outputs.Trash). Those are the user's files, so they are removed only by `cache
gc`, only in whole folders older than the age given (30 days unless told), and each removal is
named in gc's output. A folder whose name is not TIME-PID was not made by zenbuild: it is left
alone. Callers hold the store's lock.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from zenbuild.store.db import Store

DEFAULT_KEEP = "30d"  # `cache gc` without --trash-older-than or [cache] trash_keep
_NAME = re.compile(r"(\d{8}-\d{6})-(\d+)(?:-\d+)?")  # what store.outputs.Trash.folder() makes


@dataclass
class TrashFolder:
    path: str
    when: float  # when it was made (from its name: local time, as Trash writes it)
    files: int
    size: int


def _when(name: str) -> Optional[float]:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    try:
        return time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
    except (ValueError, OverflowError):
        return None


def _measure(path: str) -> Tuple[int, int]:
    files = size = 0
    for here, dirs, names in os.walk(path):
        # a symlink to a folder (one that stood at an Output) is kept as the link: one file
        for n in names + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            files += 1
            try:
                size += os.lstat(os.path.join(here, n)).st_size
            except OSError:
                pass
    return files, size


def folders(store: Store) -> List[TrashFolder]:
    """The trash folders zenbuild made, oldest first."""
    root = os.path.join(store.path, "trash")
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    out: List[TrashFolder] = []
    for name in names:
        path = os.path.join(root, name)
        when = _when(name)
        if when is None or not os.path.isdir(path) or os.path.islink(path):
            continue
        out.append(TrashFolder(path, when, *_measure(path)))
    return sorted(out, key=lambda f: (f.when, f.path))


def prune(store: Store, older_than: float, now: Optional[float] = None,
          on_remove: Callable[[TrashFolder], object] = lambda f: None) -> List[TrashFolder]:
    """Remove the trash folders made more than ``older_than`` seconds before ``now``, calling
    ``on_remove`` after each (the caller names it); returns them. A folder that cannot be
    removed raises OSError, after the ones before it were removed and named."""
    now = time.time() if now is None else now
    gone: List[TrashFolder] = []
    for f in folders(store):
        if f.when > now - older_than:
            continue
        shutil.rmtree(f.path)
        gone.append(f)
        on_remove(f)
    root = os.path.join(store.path, "trash")
    try:
        os.rmdir(root)  # only when nothing is left in it
    except OSError:
        pass
    return gone

