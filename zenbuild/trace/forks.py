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

No spool outlives the process whose recordings collect it (the root): when a recording first
forks in a process, that process sweeps what dead roots left, takes an exclusive ``flock`` on
``zenbuild-spool-ROOTPID.lock`` (held for its life, whichever pid namespace looks; a forked
child closes its copy), and removes its own spools and lock when it exits (atexit, and
multiprocessing's exit finalizers, which a pool worker runs instead of atexit; the watch
runner's child calls sweep_own before os._exit). A root killed outright leaves its files to
the next root's sweep: a lock no one holds, or (a spool of an older zenbuild, with no lock
file) a root pid that no longer runs. Only regular files of the current user that match the
names above are removed. Notes a worker makes after the last recording finished (work a step
started and did not wait for) reach no step: nothing the step returned waited on them (a
worker writes its note before it reads, so before it can hand anything back); they are
dropped with the file at exit, or go to the next step that finishes (a dependency too many,
never one too few).

Not seen: workers started by ``spawn`` or ``forkserver`` (a new interpreter: joblib's loky,
``mp_context=spawn``, the default from Python 3.14), and the code a worker runs (the call
tracer's data stays in the child).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

from zenbuild.lazyre import LazyPattern

_installed = [False]
_ROOTED = [0]  # the pid that became a root (sweeps, lock, exit sweep): a forked child is not
IN_CHILD = [False]  # this process was forked while a recording was under way: it spools
_FD: List[Optional[int]] = [None]  # the child's spool, open to append
_ROOT: List[Optional[int]] = [None]  # the pid of the process whose recordings collect
FORKED = [False]  # (that process) a child was forked while recording: collect() looks
_OFFSETS: Dict[str, int] = {}  # spool path -> bytes merged so far
_PREFIX = "zenbuild-spool-"
_LOCK_FD: List[Optional[int]] = [None]  # (the root) its lock file, flock'ed exclusive
_NAME = LazyPattern(r"zenbuild-spool-([0-9]+)(?:-([0-9]+)\.jsonl|\.lock)\Z")


def install(active: List[Any]) -> None:
    """Register the fork handlers once (``active``: trace._ACTIVE, the recordings under way)."""
    if _installed[0] or not hasattr(os, "register_at_fork"):
        return
    _installed[0] = True

    def before() -> None:
        if active and _ROOT[0] is None:
            if _ROOTED[0] != os.getpid():
                _ROOTED[0] = os.getpid()
                _become_root()
            FORKED[0] = True

    def after_in_child() -> None:
        fd = _LOCK_FD[0]
        if fd is not None:  # the lock says the root lives: a child's copy must not hold it
            _LOCK_FD[0] = None
            try:
                os.close(fd)
            except OSError:
                pass
        if not active and not IN_CHILD[0]:
            FORKED[0] = False  # (a -j worker forked by a root: it forked nothing yet)
            _OFFSETS.clear()
            return  # forked outside any recording (and not from a spooling child)
        root = _ROOT[0] if _ROOT[0] is not None else os.getppid()
        _ROOT[0] = root
        IN_CHILD[0] = True
        _OFFSETS.clear()
        path = os.path.join(_tmp(), f"{_PREFIX}{root}-{os.getpid()}.jsonl")
        try:
            _FD[0] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
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
    except (OSError, OverflowError):  # another user's process of that pid: not ours any more
        return False  # (or no pid at all: a spool name with a number no pid reaches)
    try:  # a child that exited but was not waited for yet (a zombie) is gone too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[-1][:1] != b"Z"
    except OSError:
        return True


# -- no spool outlives its root ------------------------------------------------------------------


def _become_root() -> None:
    """In the process about to fork its first child under a recording: sweep what dead roots
    left, take this root's lock, and have its own files removed when it exits."""
    try:
        sweep_stale()
        _LOCK_FD[0] = _take_lock(os.path.join(_tmp(), f"{_PREFIX}{os.getpid()}.lock"))
    except OSError:  # no temp folder: the children cannot spool either
        pass
    import atexit

    atexit.register(sweep_own)
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:  # a pool worker leaves through these, not atexit; they also run
        # after multiprocessing has stopped the pools at exit (a negative priority: last)
        mp_util.Finalize(None, sweep_own, exitpriority=-100)


def _take_lock(path: str) -> Optional[int]:
    """An fd of ``path`` flock'ed exclusive (the lock at that path now, not one a sweeper just
    removed), or None."""
    import fcntl

    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            a, b = os.fstat(fd), os.lstat(path)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                return fd
        except OSError:  # held by a sweeper about to remove it, or removed: again
            pass
        os.close(fd)
    return None


def _ours(folder: str, name: str) -> bool:
    try:
        st = os.lstat(os.path.join(folder, name))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


def _unlink(folder: str, name: str) -> None:
    try:
        os.unlink(os.path.join(folder, name))
    except OSError:
        pass


def sweep_own() -> None:
    """(At exit of a root) remove its spools and its lock. In a child that inherited the
    call (os.fork, then sys.exit), nothing."""
    if _ROOTED[0] != os.getpid() or IN_CHILD[0]:
        return
    folder = _tmp()
    mine = f"{_PREFIX}{os.getpid()}-"
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(mine) and name.endswith(".jsonl") and _NAME.match(name) \
                and _ours(folder, name):
            _unlink(folder, name)
    _OFFSETS.clear()
    fd = _LOCK_FD[0]
    if fd is not None:
        _LOCK_FD[0] = None
        _unlink(folder, f"{_PREFIX}{os.getpid()}.lock")  # before the lock is let go
        try:
            os.close(fd)
        except OSError:
            pass


def sweep_stale() -> None:
    """Remove the spools and locks of roots that are gone: a lock no process holds; without a
    lock file (an older zenbuild), a root pid that does not run. Spools named after this
    process, found before it forked under a recording, are a dead process's of the same pid."""
    import fcntl

    folder = _tmp()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    roots: Dict[int, List[str]] = {}
    for name in names:
        m = _NAME.match(name) if name.startswith(_PREFIX) else None
        if m is not None:
            roots.setdefault(int(m.group(1)), []).append(name)
    me = os.getpid()
    for root, files in roots.items():
        lock = f"{_PREFIX}{root}.lock"
        fd: Optional[int] = None
        if lock in files:
            gone = False
            if _ours(folder, lock):
                try:
                    fd = os.open(os.path.join(folder, lock), os.O_RDWR | os.O_NOFOLLOW
                                 | os.O_CLOEXEC)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    gone = True
                except OSError:  # held: the root (or a worker it left) lives
                    pass
        else:
            gone = root == me or not _alive(root)
        if gone:
            for name in files:  # its spools first, the lock last
                if name != lock and _ours(folder, name):
                    _unlink(folder, name)
            if fd is not None:
                _unlink(folder, lock)
        if fd is not None:
            os.close(fd)

