"""What a step's forked worker processes read: multiprocessing and ``ProcessPoolExecutor``
workers started with ``fork`` (the default on Linux below Python 3.14), torch ``DataLoader``
workers, ``os.fork``. A forked child inherits the recording, audit hook and environment wrapper
included, so its reads are noted, but into its own copy of the recording, which never reaches
the step's trace: a dataset read by a worker pool was invisible, and its step served stale
after the data changed.

How: a child forked while a recording is under way (and its own children) appends every note
(a file read, written or listed, an environment variable read, the environment read whole) to
a spool file of its own in the temp folder (``zenbuild-spool-ROOTPID-PID.jsonl``, 0600, one
JSON line with O_APPEND, written before the child can hand its result back). When a recording
finishes in the process that forked them, it merges what every such file gained since the last
look, and deletes the files of children that have exited. A pool kept between steps (made at
module level, or reused) is covered too: its workers' notes go to the step that finishes
next, not to the step that forked them.

Not seen: workers started by ``spawn`` or ``forkserver`` (a new interpreter: joblib's loky,
``mp_context=spawn``, the default from Python 3.14), and the code a worker runs (the call
tracer's data stays in the child).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

_installed = [False]
IN_CHILD = [False]  # this process was forked while a recording was under way: it spools
_FD: List[Optional[int]] = [None]  # the child's spool, open to append
_ROOT: List[Optional[int]] = [None]  # the pid of the process whose recordings collect
FORKED = [False]  # (that process) a child was forked while recording: collect() looks
_OFFSETS: Dict[str, int] = {}  # spool path -> bytes merged so far
_PREFIX = "zenbuild-spool-"


def install(active: List[Any]) -> None:
    """Register the fork handlers once (``active``: trace._ACTIVE, the recordings under way)."""
    if _installed[0] or not hasattr(os, "register_at_fork"):
        return
    _installed[0] = True

    def before() -> None:
        if active and _ROOT[0] is None:
            FORKED[0] = True

    def after_in_child() -> None:
        if not active and not IN_CHILD[0]:
            return  # forked outside any recording (and not from a spooling child)
        root = _ROOT[0] if _ROOT[0] is not None else os.getppid()
        _ROOT[0] = root
        IN_CHILD[0] = True
        _OFFSETS.clear()
        path = os.path.join(_tmp(), f"{_PREFIX}{root}-{os.getpid()}.jsonl")
        try:
            _FD[0] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:  # no temp folder: the child's reads stay unseen, as before
            _FD[0] = None

    os.register_at_fork(before=before, after_in_child=after_in_child)


def send(kind: str, key: Any, value: Optional[str] = None) -> None:
    """In a forked child: tell the parent of one note."""
    fd = _FD[0]
    if fd is None:
        return
    try:
        os.write(fd, (json.dumps([kind, key, value]) + "\n").encode("utf-8", "surrogatepass"))
    except (OSError, TypeError, ValueError):  # never break the worker's own read
        pass


def collect() -> Iterator[Tuple[str, Any, Optional[str]]]:
    """In the process that forked the workers, when a recording finishes: the notes its
    forked children sent since the last look; the spools of exited children removed. A line
    not yet complete (a child writing right now) waits for the next look."""
    if not FORKED[0] or IN_CHILD[0]:
        return
    folder = _tmp()
    mine = f"{_PREFIX}{os.getpid()}-"
    try:
        names = [n for n in os.listdir(folder) if n.startswith(mine) and n.endswith(".jsonl")]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            pid = int(name[len(mine):-len(".jsonl")])
        except ValueError:
            continue
        alive = _alive(pid)
        start = _OFFSETS.get(path, 0)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            continue
        cut = data.rfind(b"\n") + 1  # whole lines only
        _OFFSETS[path] = start + cut
        for line in data[:cut].decode("utf-8", "surrogatepass").splitlines():
            try:
                kind, key, value = json.loads(line)
            except (ValueError, TypeError):
                continue
            yield kind, key, value
        if not alive:
            _OFFSETS.pop(path, None)
            try:
                os.unlink(path)
            except OSError:
                pass


def _tmp() -> str:
    import tempfile  # (imported only when a step forks: a no-op run never pays for it)

    return tempfile.gettempdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process of that pid: not ours any more
        return False
    try:  # a child that exited but was not waited for yet (a zombie) is gone too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[-1][:1] != b"Z"
    except OSError:
        return True
