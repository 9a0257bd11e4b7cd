"""The workspace lock: one run at a time per store, an flock() on STORE/lock holding the pid;
and locked_file, the flock() of a small store file that is appended to and rewritten.

An flock() belongs to the open file description, which a forked child shares through the
descriptor it inherits: the lock stays taken until every process holding that descriptor has
closed it, even after the process that took it died (``kill -9`` of a run whose -j workers
lived on kept every later run waiting). So a forked child closes the descriptor at once
(os.register_at_fork below): closing it there never releases the parent's lock, which
flock(LOCK_UN) in the child would. A spawned or exec'd process never gets it (os.open's
descriptors are not inheritable)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, List, Optional, Set, Tuple

from zenbuild.errors import StoreLocked

# Descriptors of lock files this process opened (held, or being waited for) and not closed yet.
_OPEN: Set[int] = set()


def _close_in_child() -> None:
    """After a fork, in the child: let go of the parent's lock descriptors. The WorkspaceLock
    objects still name them, but release() closes only in the process that opened them."""
    for fd in _OPEN:
        try:
            os.close(fd)
        except OSError:
            pass
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class WorkspaceLock:
    """flock() of ``folder``/lock; the holder's pid is written into the file for the waiter."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._fd: Optional[int] = None
        self._pid = 0  # the process that opened _fd

    def acquire(self, wait: bool = True, on_wait: Optional[Callable[[str], object]] = None) -> None:
        """Take the lock. When another process has it: raise StoreLocked (``wait`` false), or
        call ``on_wait`` with a description of the holder (its pid, and more when that process
        is gone: see holder_text) and wait for the lock."""
        import fcntl

        fd = os.open(os.path.join(self.folder, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        _OPEN.add(fd)  # from now on, also while waiting: a child forked meanwhile drops it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = holder_text(fd, os.pread(fd, 64, 0).decode(errors="replace").strip())
                if not wait:
                    raise StoreLocked(
                        f"another zenbuild run (pid {holder}) is using {self.folder}; "
                        "wait for it or run without --no-wait"
                    ) from None
                if on_wait is not None:
                    on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except BaseException:
            _OPEN.discard(fd)
            os.close(fd)
            raise
        self._fd, self._pid = fd, os.getpid()

    def release(self) -> None:
        if self._fd is not None:
            if self._pid == os.getpid():  # in a forked child the number may name another file
                _OPEN.discard(self._fd)
                os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked_file(path: str, flags: int,
                opened: Optional[Callable[[], object]] = None) -> Iterator[Optional[int]]:
    """``path`` opened with ``flags`` and flock()ed exclusively, for a small file that is
    appended to and, now and then, rewritten (a temp file renamed over it): the descriptor
    locked is the one of the file at ``path`` now (one replaced or removed while this waited
    for the lock is opened again), so an append never goes to a file already replaced, and
    a rewrite never misses an append. None when ``path`` does not exist and ``flags`` do
    not create it. ``opened`` (tests) is called after each open, before the lock is taken."""
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if flags & os.O_CREAT:
                raise
            yield None
            return
        _OPEN.add(fd)  # a child forked meanwhile closes it (it would hold the lock)
        try:
            if opened is not None:
                opened()
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - no flock() here: one process at a time
                pass
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev,
                                                                           mine.st_ino):
                yield fd
                return
        finally:
            _OPEN.discard(fd)
            os.close(fd)


def holder_text(fd: int, recorded: str) -> str:
    """Who holds the lock file open as ``fd``, for the waiter's message: ``recorded`` (the pid
    the holder wrote, or "?"), as is while that process runs. When it does not run (or, on
    Linux, runs but no longer holds the lock: its pid was reused), say so, and on Linux name
    the processes that hold it now (a descriptor inherited by a child outlives its parent),
    so that the user can tell what to end."""
    pid = int(recorded) if recorded.isdigit() else 0
    if pid and _running(pid):
        mine = lock_holders(fd, pids=[pid])
        if mine is None or mine:  # it holds the lock (or /proc cannot tell)
            return recorded
        holders = lock_holders(fd)
        if not holders:  # another user's process, which /proc does not show us
            return recorded
        state = f"{recorded}, which no longer holds the lock"
    else:
        state = f"{recorded}, which is no longer running" if pid else "unknown"
        holders = lock_holders(fd)
    if holders is None:
        return state
    if not holders:
        return (f"{state}; no process on this machine that we can see holds the lock "
                "(another machine or another user?)")
    listed = [f"pid {p} ({cmd})" for p, cmd in holders[:5]]
    if len(holders) > 5:
        listed.append(f"{len(holders) - 5} more")
    them = "it" if len(holders) == 1 else "them"
    return f"{state}; the lock is held by {', '.join(listed)}: end {them} to go on"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, not reaped yet)."""
    if sys.platform == "win32":  # pragma: no cover - os.kill would end it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except OSError:  # pragma: no cover - not a pid this platform knows
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def lock_holders(fd: int, pids: Optional[List[int]] = None) -> Optional[List[Tuple[int, str]]]:
    """On Linux, the processes (among ``pids``, default all we may look into) that hold the
    lock on the file open here as ``fd``: they have it open through a descriptor that
    /proc/PID/fdinfo shows the flock on (not merely open, as another waiter has it). Each
    with a short command line, by pid. None where /proc cannot tell."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fdinfo"):
        return None
    st = os.fstat(fd)
    me = os.getpid()
    found: List[int] = []
    for pid in pids if pids is not None else _all_pids():
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        for name in names:
            if pid == me and name == str(fd):
                continue
            try:  # the link's name first: a stat could hang on a file of a dead NFS server
                if os.path.basename(os.readlink(f"/proc/{pid}/fd/{name}")) != "lock":
                    continue
                other = os.stat(f"/proc/{pid}/fd/{name}")
                if (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{name}") as f:
                    if any(line.startswith("lock:") and "FLOCK" in line for line in f):
                        found.append(pid)
                        break
            except OSError:
                continue
    return [(pid, _command(pid)) for pid in sorted(found)]


def _all_pids() -> List[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:  # pragma: no cover
        return []


def _command(pid: int) -> str:
    """The command line of ``pid``, short: the program and script by file name only."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    words = [w for w in words if w]
    words[:2] = [os.path.basename(w) if w.startswith(os.sep) else w for w in words[:2]]
    text = " ".join(" ".join(words).split()) or "?"  # a -c script's lines, too
    return text if len(text) <= 60 else text[:57] + "..."
