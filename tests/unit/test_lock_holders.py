"""The workspace lock (store/lock.py) and forked children: a child does not keep the parent's
lock once the parent is gone, closing the child's copy leaves the parent's lock alone, and a
waiter whose recorded holder is dead names the processes that really hold the lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from zenbuild.errors import StoreLocked
from zenbuild.store.lock import WorkspaceLock, holder_text, lock_holders

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="flock semantics and /proc are Linux's")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def dead_pid() -> int:
    """The pid of a process that ran and was reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def opens(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    st = path.stat()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            other = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


@pytest.fixture
def sleeper_holding(tmp_path: Path) -> Iterator[List[int]]:
    """The lock of tmp_path taken here, its pid written as a dead one, and the descriptor then
    handed to a `sleep` (as a forked worker inherits it) and closed here: the sleep holds the
    lock, the file names a process that is gone. Yields [sleep's pid, recorded pid]."""
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    gone = dead_pid()
    os.pwrite(fd, str(gone).encode(), 0)
    sleeper = subprocess.Popen(["sleep", "600"], pass_fds=[fd])
    os.close(fd)
    try:
        _until_running_as(sleeper.pid, b"sleep\x00600\x00")
        yield [sleeper.pid, gone]
    finally:
        sleeper.kill()
        sleeper.wait()


def _until_running_as(pid: int, cmdline: bytes, limit: float = 30.0) -> None:
    """The handshake: wait until /proc shows ``pid`` running ``cmdline`` (on a loaded machine
    the holder's command was once read as '?' right after the start: CI, 2026-12-02)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"pid {pid} never showed {cmdline!r}"
        time.sleep(0.005)


# Takes the lock, forks a child that blocks on stdin (as a -j worker waits for its next task),
# and says "ready PARENT CHILD" once the child runs; then blocks on stdin too.
FORKER = '''
import os, sys
from zenbuild.store.lock import WorkspaceLock

lock = WorkspaceLock(sys.argv[1])
lock.acquire(wait=False)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.write(w, b"x")
    os.read(0, 1)
    os._exit(0)
os.close(w)
os.read(r, 1)
print("ready", os.getpid(), pid, flush=True)
os.read(0, 1)
'''


def test_a_forked_child_keeps_neither_the_lock_nor_the_file(tmp_path: Path) -> None:
    """The child closed its inherited descriptor (it has the lock file open no more), which did
    not release the parent's lock; once the parent is killed, the lock is free although the
    child lives on. (Before, the child's descriptor kept the lock taken until it exited.)"""
    child = 0
    with subprocess.Popen([sys.executable, "-c", FORKER, str(tmp_path)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            words = proc.stdout.readline().split()
            assert words[:1] == ["ready"], (words, proc.wait())
            parent, child = int(words[1]), int(words[2])
            assert opens(parent, tmp_path / "lock")
            with pytest.raises(StoreLocked, match=rf"\(pid {parent}\) is using"):
                WorkspaceLock(str(tmp_path)).acquire(wait=False)  # the parent's lock holds
            os.kill(parent, signal.SIGKILL)
            proc.wait()
            assert alive(child)
            mine = WorkspaceLock(str(tmp_path))
            mine.acquire(wait=False)  # StoreLocked without the fix: the child held it
            mine.release()
            assert not opens(child, tmp_path / "lock")
        finally:
            proc.kill()
            if child and alive(child):
                os.kill(child, signal.SIGKILL)


def test_unlocking_in_a_child_would_release_the_parents_lock(tmp_path: Path) -> None:
    """Why the child closes its descriptor and never calls flock(LOCK_UN): the lock belongs to
    the open file description both share, so unlocking it in the child unlocks the parent."""
    script = textwrap.dedent('''
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        def free():
            other = os.open(sys.argv[1], os.O_RDWR)
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            finally:
                os.close(other)
        for how in ("close", "unlock"):
            pid = os.fork()
            if pid == 0:
                fcntl.flock(fd, fcntl.LOCK_UN) if how == "unlock" else os.close(fd)
                os._exit(0)
            os.waitpid(pid, 0)
            print(how, free())
    ''')
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "lock")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["close", "False", "unlock", "True"]


def test_a_dead_recorded_holder_is_said_and_the_real_holders_named(
        tmp_path: Path, sleeper_holding: List[int]) -> None:
    sleeper, gone = sleeper_holding
    with pytest.raises(StoreLocked) as e:
        WorkspaceLock(str(tmp_path)).acquire(wait=False)
    assert (f"(pid {gone}, which is no longer running; the lock is held by pid {sleeper} "
            f"(sleep 600): end it to go on) is using") in str(e.value)


def test_the_waiter_is_told_then_gets_the_lock_once_the_holder_ends(
        tmp_path: Path, sleeper_holding: List[int]) -> None:
    sleeper, gone = sleeper_holding
    told: List[str] = []

    def on_wait(holder: str) -> None:  # the handshake: end the holder, the wait then ends
        told.append(holder)
        os.kill(sleeper, signal.SIGKILL)

    lock = WorkspaceLock(str(tmp_path))
    lock.acquire(on_wait=on_wait)
    try:
        assert told == [f"{gone}, which is no longer running; the lock is held by pid "
                        f"{sleeper} (sleep 600): end it to go on"]
        assert (tmp_path / "lock").read_text() == str(os.getpid())
    finally:
        lock.release()


def test_a_running_holder_is_named_as_recorded(tmp_path: Path) -> None:
    held = WorkspaceLock(str(tmp_path))
    held.acquire()
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        assert holder_text(fd, str(os.getpid())) == str(os.getpid())
        assert [pid for pid, _ in lock_holders(fd) or []] == [os.getpid()]
    finally:
        os.close(fd)
        held.release()


def test_a_reused_pid_that_does_not_hold_the_lock_is_not_taken_for_the_holder(
        tmp_path: Path, sleeper_holding: List[int]) -> None:
    sleeper, _ = sleeper_holding
    other = subprocess.Popen(["sleep", "600"])  # runs, has nothing to do with the lock
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        assert holder_text(fd, str(other.pid)) == (
            f"{other.pid}, which no longer holds the lock; the lock is held by pid {sleeper} "
            "(sleep 600): end it to go on")
    finally:
        os.close(fd)
        other.kill()
        other.wait()


def test_no_visible_holder_and_no_recorded_pid(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        assert lock_holders(fd) == []
        assert holder_text(fd, "?") == (
            "unknown; no process on this machine that we can see holds the lock "
            "(another machine or another user?)")
    finally:
        os.close(fd)


def test_release_in_a_forked_child_closes_nothing(tmp_path: Path) -> None:
    """The child's WorkspaceLock still names the descriptor the fork closed; releasing it there
    (a child unwinding through a finally) must not close whatever file now has that number."""
    script = textwrap.dedent('''
        import os, sys
        from zenbuild.store.lock import WorkspaceLock
        lock = WorkspaceLock(sys.argv[1])
        lock.acquire()
        number = lock._fd
        pid = os.fork()
        if pid == 0:
            again = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: the closed one
            lock.release()
            try:
                os.fstat(again)
                os._exit(0 if again == number else 3)
            except OSError:
                os._exit(4)
        print(os.waitpid(pid, 0)[1] >> 8)
    ''')
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["0"]
