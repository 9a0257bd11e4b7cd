"""What a step's forked worker processes read: multiprocessing and ``ProcessPoolExecutor``
workers started with ``fork`` (the default on Linux below Python 3.14), torch ``DataLoader``
workers, ``os.fork``. A forked child inherits the recording, audit hook and environment wrapper
included, so its reads are noted, but into its own copy of the recording, which never reaches
the step's trace: a dataset read by a worker pool was invisible, and its step served stale
after the data changed.

How: before a fork while a recording is under way, each active recording gets a spool file
(in the temp folder, 0600); in the child, every note (a file read, written or listed, an
environment variable read, the environment read whole) is also appended to it, one JSON line
with O_APPEND, written before the child can hand its result back. When the recording finishes
in the parent, it merges the spool and deletes it.

Not seen: workers started by ``spawn`` or ``forkserver`` (a new interpreter: joblib's loky,
``mp_context=spawn``, the default from Python 3.14), and the code a worker runs (the call
tracer's data stays in the child).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterator, List, Optional, Tuple

_installed = [False]
IN_CHILD = [False]  # this process is a fork of one whose recordings spool to their parent


def install(active: List[Any]) -> None:
    """Register the fork handlers once (``active``: trace._ACTIVE, the recordings under way)."""
    if _installed[0] or not hasattr(os, "register_at_fork"):
        return
    _installed[0] = True

    def before() -> None:
        for rec in list(active):
            if rec.spool is None:
                try:
                    fd, path = tempfile.mkstemp(prefix="zenbuild-spool-", suffix=".jsonl")
                    os.close(fd)
                except OSError:  # no temp folder: the child's reads stay unseen, as before
                    continue
                rec.spool = path

    def after_in_child() -> None:
        IN_CHILD[0] = True
        for rec in list(active):
            rec.spool_fd = None
            if rec.spool is not None:
                try:
                    rec.spool_fd = os.open(rec.spool, os.O_WRONLY | os.O_APPEND)
                except OSError:
                    pass

    os.register_at_fork(before=before, after_in_child=after_in_child)


def send(rec: Any, kind: str, key: Any, value: Optional[str] = None) -> None:
    """In a forked child: tell the parent's recording of one note."""
    fd = rec.spool_fd
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps([kind, key, value]) + "\n").encode("utf-8", "surrogatepass"))
    except (OSError, TypeError, ValueError):  # never break the worker's own read
        pass


def collect(rec: Any) -> Iterator[Tuple[str, Any, Optional[str]]]:
    """In the parent, when ``rec`` finishes: the notes its forked children sent, and the spool
    removed. A line cut short (a child killed while writing) is skipped."""
    path = rec.spool
    if path is None:
        return
    rec.spool = None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    for line in data.decode("utf-8", "surrogatepass").splitlines():
        try:
            kind, key, value = json.loads(line)
        except (ValueError, TypeError):
            continue
        yield kind, key, value
