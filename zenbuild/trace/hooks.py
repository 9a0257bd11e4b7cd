"""What the recorder hooks into the interpreter for every recording (an import's too: a no-op
run records its pipeline module's import).

The environment: ``os._Environ.__getitem__`` (which ``get``, ``in`` and ``os.getenv`` go
through) of ``os.environ`` and of ``os.environb`` (bytes: recorded by the names and values
os.environ shows, os.fsdecode'd) is wrapped while a recording that tracks the environment is
active, and put back when the last one ends (wrap_env, unwrap_env: Recorder calls them). A
variable the step set or deleted before reading it is not its input. A read of the whole
environment (``os.environ.copy()``, ``dict(os.environ)``, items(), iteration; a child process
that inherits it) reads every tracked variable and keeps the set of names (Trace.env_all,
_note_all), not as many reads of its keys one by one.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, List, Optional

from zenbuild.trace import (
    _ACTIVE,
    _IN_CHILD,
    _LOCK,
    _from_user,
    _lib,
    _Recording,
    _target,
    _up,
    bulk_wanted,
    forks,
    memo,
)

_Environ: Any = type(os.environ)
_ORIG_GETITEM = _Environ.__getitem__
_ORIG_SETITEM = _Environ.__setitem__
_ORIG_DELITEM = _Environ.__delitem__
_ORIG_ITER = _Environ.__iter__
_env_users = [0]


def _note_env(key: Any, value: Optional[str]) -> None:
    try:
        rec = _target()
        if rec is None or not rec.opts.track_env or not isinstance(key, str):
            return
        if rec.bulk is not None:
            if rec.bulk_pos < len(rec.bulk) and rec.bulk[rec.bulk_pos] == key:
                rec.bulk_pos += 1  # part of a copy or iteration of the whole environment
                return
            rec.bulk = None
        if key in rec.env or key in rec.env_set:  # the first read decides: repeats are cheap
            if key in rec.env:  # (but a memoized function reading it again must know)
                memo.attribute(rec.root, "env", key, value, sys._getframe(2), _lib())
            return
        if not rec.env_wanted(key) or not _from_user(sys._getframe(2)):
            return
        memo.attribute(rec.root, "env", key, value, sys._getframe(2), _lib())
        r: Optional[_Recording] = rec
        while r is not None and r.opts.track_env:
            if key not in r.env and key not in r.env_set:
                r.env[key] = value
            r = _up(r)
        if _IN_CHILD[0]:
            forks.send("env", key, value)
    except Exception:  # pragma: no cover - never break the step's own look-up
        pass


def _environb() -> Any:
    return getattr(os, "environb", None)  # POSIX only


def _decoded(key: Any) -> Any:
    """An os.environb key or value as os.environ has it (os.fsdecode: the file system encoding,
    surrogateescape); anything else as it is."""
    try:
        return os.fsdecode(key) if isinstance(key, bytes) else key
    except Exception:  # pragma: no cover - an encoding that cannot decode it
        return None


def _env_getitem(self: Any, key: Any) -> Any:
    try:
        value = _ORIG_GETITEM(self, key)
    except KeyError:
        if _ACTIVE:
            if self is os.environ:
                _note_env(key, None)
            elif self is _environb():  # os.environb: bytes names and values
                _note_env(_decoded(key), None)
        raise
    if _ACTIVE:
        if self is os.environ:
            _note_env(key, value)
        elif self is _environb():
            _note_env(_decoded(key), _decoded(value))
    return value


def _env_target(self: Any) -> Optional[_Recording]:
    """The recording a write or iteration of ``self`` goes to: os.environ or os.environb."""
    if _ACTIVE and (self is os.environ or self is _environb()):
        return _target()
    return None


def _env_setitem(self: Any, key: Any, value: Any) -> None:
    _ORIG_SETITEM(self, key, value)
    rec = _env_target(self)
    if rec is not None:
        rec.env_set.add(_decoded(key))


def _env_delitem(self: Any, key: Any) -> None:
    _ORIG_DELITEM(self, key)
    rec = _env_target(self)
    if rec is not None:
        rec.env_set.add(_decoded(key))


def _env_iter(self: Any) -> Iterator[Any]:
    rec = _env_target(self)
    if rec is not None:
        rec.bulk = [_decoded(k) for k in _ORIG_ITER(self)]
        rec.bulk_pos = 0
        if rec.opts.track_env:
            _note_all(rec, sys._getframe(1), rec.bulk)
    yield from _ORIG_ITER(self)


def _note_all(rec: _Recording, caller: Any, names: List[Any]) -> None:
    """The step read the environment whole (iterated it: a copy, items(), a settings class;
    or started a subprocess that inherits it): every tracked variable set now (``names``) is
    a read, and the set of names is kept, so that one set later reruns the step too. The
    first such read decides; a variable the step set itself is its own."""
    try:
        if not _from_user(caller):
            return
        r: Optional[_Recording] = rec
        while r is not None and r.opts.track_env:
            if r.env_all is None:
                wanted = r.env_wanted
                mine = [n for n in names if n is not None and n not in r.env_set
                        and bulk_wanted(n, wanted)]
                r.env_all = sorted(mine)
                for n in mine:
                    if n not in r.env:
                        try:
                            r.env[n] = _ORIG_GETITEM(os.environ, n)
                        except KeyError:  # pragma: no cover - unset by another thread
                            r.env[n] = None
                        if _IN_CHILD[0]:
                            forks.send("env", n, r.env[n])
                if _IN_CHILD[0]:
                    forks.send("env_all", r.env_all)
            r = _up(r)
    except Exception:  # pragma: no cover - never break the step's own iteration
        pass


class _TracedEnviron(_Environ):  # type: ignore[misc, valid-type]
    """What os.environ (and os.environb) is an instance of while a recording runs: its class is
    swapped (one
    assignment; setting the four methods on os._Environ itself, and back, cost ~25K
    instructions a step: each dunder assignment updates the type's slots)."""

    __getitem__ = _env_getitem
    __setitem__ = _env_setitem
    __delitem__ = _env_delitem
    __iter__ = _env_iter


_TracedEnviron.__name__ = _TracedEnviron.__qualname__ = _Environ.__name__
_TracedEnviron.__module__ = _Environ.__module__
_swapped: List[Any] = []  # the os.environ whose class was swapped, while one is
_patched = [False]  # os.environ is of another class: os._Environ's methods were set instead


def wrap_env() -> None:
    """Record os.environ's reads (and os.environb's) from now on, until as many unwrap_env()."""
    with _LOCK:
        _env_users[0] += 1
        if _env_users[0] == 1:
            envs = [e for e in (os.environ, _environb()) if e is not None]
            if all(type(e) is _Environ for e in envs):  # os.environ, and os.environb (bytes)
                for env in envs:
                    env.__class__ = _TracedEnviron
                    _swapped.append(env)
                return
            _patched[0] = True  # a subclass, or a replacement: as before, on the class
            _Environ.__getitem__ = _env_getitem
            _Environ.__setitem__ = _env_setitem
            _Environ.__delitem__ = _env_delitem
            _Environ.__iter__ = _env_iter


def unwrap_env() -> None:
    with _LOCK:
        _env_users[0] -= 1
        if _env_users[0] <= 0:
            _env_users[0] = 0
            while _swapped:
                env = _swapped.pop()
                if type(env) is _TracedEnviron:
                    env.__class__ = _Environ
            if _patched[0]:
                _patched[0] = False
                _Environ.__getitem__ = _ORIG_GETITEM
                _Environ.__setitem__ = _ORIG_SETITEM
                _Environ.__delitem__ = _ORIG_DELITEM
                _Environ.__iter__ = _ORIG_ITER
