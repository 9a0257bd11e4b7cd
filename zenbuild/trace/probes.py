"""What a step looks for that no audit event shows, seen while a step (not an import) is
recorded: existence checks, through a wrapper of os.stat, and listings through a pattern, the
recorder's side of the glob wrappers of trace/globs.py. wrap and unwrap (Recorder calls them)
count their users: the last unwrap puts back what the first wrap replaced. Imported when the
first step is recorded, so a no-op run, which records only its pipeline module's import, does
not import it."""

from __future__ import annotations

import os
import stat as stat_mod
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.trace import (
    _ACTIVE,
    _LOCK,
    _ORIG_STAT,
    _from_user,
    _lib,
    _note,
    _Recording,
    _target,
    _up,
    memo,
)
from zenbuild.trace.hooks import _QUIET, _loud, _quiet

# -- existence checks ---------------------------------------------------------------------------
# Python has no audit event for stat, so os.path.exists(), os.path.isfile() and Path.exists()/
# is_file() (which all call os.stat at call time) are seen by wrapping os.stat while a step is
# recorded. A probed regular file counts as read (its content is what a step that checks it is
# likely to use next, maybe through native code); a missing one as a file the step tried to
# open, so its appearing reruns the step. Folders are not counted.

_stat_users = [0]


def _stat_wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        st = _ORIG_STAT(path, *args, **kwargs)
    except FileNotFoundError:
        if _ACTIVE:
            _probe(path, None)
        raise
    if _ACTIVE:
        _probe(path, st)
    return st


def _probe(path: Any, st: Any) -> None:
    try:
        if isinstance(path, int) or (st is not None and not stat_mod.S_ISREG(st.st_mode)):
            return
        if _QUIET and _QUIET.get(threading.get_ident()):
            return  # a glob's own look: its recorded pattern covers what it found
        rec = _target()
        if rec is None or not rec.opts.track_reads:
            return
        rel = rec.rel(path)
        if rel is None or rel == "." or rec.dismissed(rel):
            return
        if _from_user(sys._getframe(2)):
            memo.attribute(rec.root, "reads", rel, None, sys._getframe(2), _lib())
            _note(rec, "reads", rel)  # a file the step wrote is dropped from reads at finish
    except Exception:  # pragma: no cover - never break the step's own stat
        pass


def _accessor() -> Any:
    """Python 3.10's pathlib._NormalAccessor, whose ``stat`` is os.stat as it was when pathlib
    was imported (Path.is_file()/exists() go through it there, not through os.stat); None on
    3.11+, where pathlib calls os.stat itself."""
    import pathlib

    acc = getattr(pathlib, "_NormalAccessor", None)
    return acc if acc is not None and getattr(acc, "stat", None) is _ORIG_STAT else None


def _wrap_stat() -> None:
    with _LOCK:
        _stat_users[0] += 1
        if _stat_users[0] == 1:
            os.stat = _stat_wrapper
            acc = _accessor()
            if acc is not None:
                acc.stat = staticmethod(_stat_wrapper)
                _accessors.append(acc)


def _unwrap_stat() -> None:
    with _LOCK:
        _stat_users[0] = max(0, _stat_users[0] - 1)
        if _stat_users[0] == 0:
            os.stat = _ORIG_STAT
            while _accessors:
                _accessors.pop().stat = _ORIG_STAT


_accessors: List[Any] = []  # 3.10's pathlib accessor while its stat is wrapped


# -- listings through a pattern ------------------------------------------------------------------
# glob.glob/iglob and Path.glob/rglob are wrapped while a step is recorded (trace/globs.py):
# such a listing is recorded as its pattern, and the listings and existence checks it makes on
# the way are not recorded (_QUIET: thread id -> depth of recorded globs under way).

_glob_users = [0]
_GLOBS: Any = None  # zenbuild.trace.globs, imported when the first step is recorded


def _note_glob(make: Callable[[Callable[[Any], Optional[str]]], Optional[List[Any]]],
               frame: Any) -> bool:
    """Record the spec ``make(rel)`` gives for the recording this thread's events go to (and
    those it passes them up to); whether one was recorded (then the call runs quietly)."""
    try:
        rec = _target()
        if rec is None or not rec.opts.track_reads or not _from_user(frame):
            return False
        spec = make(rec.rel)
        if spec is None:
            return False
        key = (spec[0], spec[1], spec[2], tuple(sorted(spec[3].items())))
        entry = rec.globs.get(key)
        if entry is None:  # what it matches now, before the step looks: a change from here
            entry = [*spec, _glob_digest(rec, spec)]  # on differs from it (a rerun, never a
        r: Optional[_Recording] = rec  # stale entry, as a digest taken after the step was)
        while r is not None and r.opts.track_reads:
            r.globs.setdefault(key, entry)
            r = _up(r)
        return True
    except Exception:  # pragma: no cover - never break the step's own glob
        return False


_SKIPS: Dict[Tuple[str, str], Tuple[str, ...]] = {}  # (root, store) -> globs.skipped()


def _glob_digest(rec: _Recording, spec: List[Any]) -> Optional[str]:
    """The digest of what ``spec`` matches now (globs.digest), its own listings unrecorded."""
    skip = _SKIPS.get((rec.root, rec.opts.store_dir))
    if skip is None:
        skip = _SKIPS[(rec.root, rec.opts.store_dir)] = _GLOBS.skipped(rec.root,
                                                                        rec.opts.store_dir)
    _quiet()
    try:
        return _GLOBS.digest(rec.root, spec, skip)  # type: ignore[no-any-return]
    finally:
        _loud()


def _in_glob() -> bool:
    return bool(_QUIET) and bool(_QUIET.get(threading.get_ident()))


def _wrap_globs() -> None:
    global _GLOBS
    with _LOCK:
        _glob_users[0] += 1
        if _glob_users[0] == 1:
            if _GLOBS is None:
                from zenbuild.trace import globs

                globs.HOOKS.note = _note_glob
                globs.HOOKS.quiet = _quiet
                globs.HOOKS.loud = _loud
                globs.HOOKS.inside = _in_glob
                _GLOBS = globs
            _GLOBS.wrap()


def _unwrap_globs() -> None:
    with _LOCK:
        _glob_users[0] = max(0, _glob_users[0] - 1)
        if _glob_users[0] == 0 and _GLOBS is not None:
            _GLOBS.unwrap()


def wrap() -> None:
    """Wrap os.stat and the glob functions for a step's recording, until as many unwrap()."""
    _wrap_stat()
    _wrap_globs()


def unwrap() -> None:
    _unwrap_stat()
    _unwrap_globs()
