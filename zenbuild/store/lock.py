"""The workspace lock: one run at a time per store, an flock() on STORE/lock holding the pid."""

from __future__ import annotations

import os
from typing import Callable, Optional

from zenbuild.errors import StoreLocked


class WorkspaceLock:
    """flock() of ``folder``/lock; the holder's pid is written into the file for the waiter."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._fd: Optional[int] = None

    def acquire(self, wait: bool = True, on_wait: Optional[Callable[[str], object]] = None) -> None:
        import fcntl

        fd = os.open(os.path.join(self.folder, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                os.close(fd)
                raise StoreLocked(
                    f"another zenbuild run (pid {holder}) is using {self.folder}; "
                    "wait for it or run without --no-wait"
                ) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
