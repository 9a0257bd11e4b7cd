"""watchdog at the edge: observers (inotify or polling), event forwarding, overflow and limits.

Nothing here decides anything: events go onto the watcher's queue as plain tuples."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, List, Optional

LIMIT_HELP = (
    "raise the limit with `sudo sysctl fs.inotify.max_user_watches=524288` (add it to "
    "/etc/sysctl.conf to keep it), or pass --poll"
)
POLL_INTERVAL_S = 0.25


class EventForwarder:
    """A watchdog event handler that puts ("fs", type, src, dest, is_dir) on the queue."""

    def __init__(self, post: Callable[[tuple], None]) -> None:
        self.post = post

    def dispatch(self, event: Any) -> None:
        self.post(("fs", event.event_type, os.fsdecode(event.src_path),
                   os.fsdecode(getattr(event, "dest_path", "") or ""), bool(event.is_directory)))


class OverflowHandler(logging.Handler):
    """watchdog only logs an inotify queue overflow; turn that log record into a rescan."""

    def __init__(self, post: Callable[[tuple], None]) -> None:
        super().__init__(logging.WARNING)
        self.post = post

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.post(("overflow",))


def event_filter() -> List[Any]:
    """The event types that can change a build (not opens, reads or attribute changes)."""
    from watchdog import events as ev

    names = ("FileModifiedEvent", "FileCreatedEvent", "FileMovedEvent", "FileDeletedEvent",
             "FileClosedEvent", "DirCreatedEvent", "DirMovedEvent", "DirDeletedEvent")
    return [getattr(ev, n) for n in names if hasattr(ev, n)]


def make_observer(poll: bool) -> Any:
    if poll:
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=POLL_INTERVAL_S)
    from watchdog.observers import Observer

    return Observer()


class NullObserver:
    """Stands in for an observer that failed to start, until polling replaces it."""

    def stop(self) -> None:
        pass


def inotify_limit(what: str) -> Optional[str]:
    """The current fs.inotify.max_user_{what}s, if readable."""
    try:
        with open(f"/proc/sys/fs/inotify/max_user_{what}s") as f:
            return f.read().strip()
    except OSError:
        return None
