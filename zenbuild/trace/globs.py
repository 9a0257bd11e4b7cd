"""Listings through a pattern: while a step is recorded, ``glob.glob``/``glob.iglob`` and
``pathlib.Path.glob``/``rglob`` are wrapped, so such a listing is recorded as the pattern it
was (a *glob spec*) and the folder listings it makes inside are not recorded as listings of
everything; and the evaluation of a recorded spec (``names``, ``digest``), which verifying an
entry and ``zenbuild watch`` use.

Why this is exact: a glob's result is a function of its pattern, its options and the names on
disk, and everything the step can learn from it is in that result. Re-running the same library
function on the same folder later and comparing the sorted results is therefore exactly the
dependency: a file the pattern does not match (``notes.txt`` beside ``*.csv``, a hidden file
``glob.glob("*")`` skips) changes nothing, one it matches (at any depth for ``**``) does.

A spec is ``[kind, base, pattern, opts]``: ``kind`` "glob" (glob.glob/iglob, evaluated as
``glob.glob(pattern, root_dir=base, **opts)``), "path.glob" or "path.rglob" (evaluated as
``Path(base).glob(pattern, **opts)``); ``base`` the project-relative posix folder ("." for the
root) the pattern is relative to (for glob.glob, the literal folders the pattern starts with);
``opts`` the options that change what is matched (recursive, include_hidden, case_sensitive,
recurse_symlinks), defaults left out.

Anything the wrappers cannot turn into a spec (bytes, a ``dir_fd``, ``..`` in the pattern, an
option not known here) runs unwrapped: its listings are then recorded as listings of
everything, which can rerun a step too often but never serves a stale one. So is a glob
function bound before the step ran (``from glob import glob`` at import time)."""

from __future__ import annotations

import glob as _glob_mod
import os
import pathlib
import re
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from zenbuild.digest import digest_bytes
from zenbuild.lazyre import LazyPattern
from zenbuild.paths import SKIP_DIRS

KINDS = ("glob", "path.glob", "path.rglob")
# the options of each kind that change what is matched, and the types their values may have
_GLOB_OPTS = ("recursive", "include_hidden")
_PATH_OPTS = ("case_sensitive", "recurse_symlinks")
_MAGIC = LazyPattern(r"[*?[]")

_ORIG_GLOB = _glob_mod.glob
_ORIG_IGLOB = _glob_mod.iglob
_ORIG_PATH_GLOB = pathlib.Path.glob
_ORIG_PATH_RGLOB = pathlib.Path.rglob

Spec = List[Any]  # [kind, base, pattern, opts]


# -- evaluating a recorded spec -------------------------------------------------------------------


# what a match never counts for, as the recorder never records a touch there (trace.rel): a
# __pycache__ or virtualenv folder, and the store (``skip``: its project-relative folder)
_NOISE = LazyPattern("(?:^|/)(?:__pycache__|" + "|".join(re.escape(d) for d in SKIP_DIRS)
                    + ")(?:/|$)")


def skipped(root: str, store: str) -> Tuple[str, ...]:
    """The ``skip`` of names() for a project: its store's folder when inside the root."""
    if not store:
        return ()
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, store))
    if real == real_root or not real.startswith(real_root + os.sep):
        return ()
    return (real[len(real_root) + 1:].replace(os.sep, "/"),)


def names(root: str, spec: Spec, skip: Tuple[str, ...] = ()) -> Optional[List[str]]:
    """The sorted names (relative to the spec's base, posix) that the spec matches now under
    ``root``; None when it cannot be evaluated (the same failure compares equal). A match in
    the store (``skip``: project-relative folders), a __pycache__ or a virtualenv does not
    count: the store changes with every run, and a touch there is never recorded either."""
    kind, base, pattern, opts = spec
    full = root if base == "." else os.path.join(root, base)
    if not os.path.isdir(full):  # told apart from an empty folder: glob.glob("data/**",
        return None  # recursive=True) gives "data/" for an empty folder, nothing for none
    try:
        if kind == "glob":
            got = list(_ORIG_GLOB(pattern, root_dir=full, **opts))
        else:
            found = (_ORIG_PATH_GLOB if kind == "path.glob" else _ORIG_PATH_RGLOB)(
                pathlib.Path(full), pattern, **opts)
            prefix = full.rstrip(os.sep) + os.sep
            got = []
            for p in found:
                s = str(p)
                got.append("." if s == full else s[len(prefix):] if s.startswith(prefix) else s)
    except (OSError, ValueError, TypeError, NotImplementedError):
        return None
    if os.sep != "/":  # pragma: no cover - Windows
        got = [g.replace(os.sep, "/") for g in got]
    lead = "" if base == "." else base + "/"
    below = tuple(s + "/" for s in skip)
    return sorted(g for g in got if ".zenbuild-tmp-" not in g  # a restore's temp file
                  and _NOISE.search(lead + g) is None
                  and not (lead + g + "/").startswith(below))


def digest(root: str, spec: Spec, skip: Tuple[str, ...] = ()) -> Optional[str]:
    """The digest of what ``spec`` matches now (names()), None when it cannot be evaluated."""
    got = names(root, spec, skip)
    if got is None:
        return None
    return digest_bytes("\0".join(got).encode("utf-8", "surrogatepass"))


def display(spec: Spec) -> str:
    """How explain names a spec: the pattern with its folder (``data/**/*.csv``)."""
    kind, base, pattern, _opts = spec
    if kind == "path.rglob":
        pattern = "**/" + pattern
    return pattern if base == "." else f"{base}/{pattern}"


def valid(spec: Any) -> bool:
    """Whether a stored spec has the shape this version evaluates, and stays inside the
    project (a record from a remote cache must not make zenbuild list folders elsewhere)."""
    if not (type(spec) is list and len(spec) == 4):
        return False
    kind, base, pattern, opts = spec
    if kind not in KINDS or type(base) is not str or type(pattern) is not str:
        return False
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        return False
    if base != "." and (base.startswith("/") or any(p in ("", ".", "..")
                                                    for p in base.split("/"))):
        return False
    allowed = _GLOB_OPTS if kind == "glob" else _PATH_OPTS
    return type(opts) is dict and all(k in allowed and type(v) is bool for k, v in opts.items())


# -- turning a call into a spec ------------------------------------------------------------------


def glob_spec(rel: Callable[[Any], Optional[str]], pathname: Any, args: Tuple[Any, ...],
              kwargs: Dict[str, Any]) -> Optional[Spec]:
    """The spec of ``glob.glob(pathname, *args, **kwargs)``, or None (not one this module
    can evaluate again the same way). ``rel`` maps a path to its project-relative form."""
    if args or os.sep != "/" or kwargs.get("dir_fd") is not None:
        return None
    if any(k not in ("root_dir", "dir_fd", *_GLOB_OPTS) for k in kwargs):
        return None
    try:
        pathname = os.fspath(pathname)
        root_dir = kwargs.get("root_dir")
        root_dir = "" if root_dir is None else os.fspath(root_dir)
    except TypeError:
        return None
    if type(pathname) is not str or type(root_dir) is not str or not pathname:
        return None
    parts = pathname.split("/")
    if ".." in parts or ".." in root_dir.split("/"):  # the kernel resolves x/.. through a
        return None  # symlink x, and x/.. needs x: not what the normalized folder would be
    first = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), None)
    cut = len(parts) - 1 if first is None else first  # no magic: the name itself
    prefix, rest = parts[:cut], parts[cut:]
    pattern = "/".join(rest)
    if not pattern or pattern.startswith("/"):
        return None
    lead = "/".join(prefix) if prefix != [""] else "/"
    base = rel(os.path.join(root_dir, lead) if lead else (root_dir or "."))
    if base is None:
        return None
    base = base.rstrip("/") or "."
    opts = {k: True for k in _GLOB_OPTS if kwargs.get(k)}
    return ["glob", base, pattern, opts]


def path_spec(rel: Callable[[Any], Optional[str]], kind: str, path: Any, pattern: Any,
              args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Spec]:
    """The spec of ``path.glob(pattern, ...)`` (``kind`` "path.glob" or "path.rglob")."""
    if args or os.sep != "/" or any(k not in _PATH_OPTS for k in kwargs):
        return None
    if any(v is not None and type(v) is not bool for v in kwargs.values()):
        return None
    try:
        pattern = os.fspath(pattern)
        where = os.fspath(path)
    except TypeError:
        return None
    if type(pattern) is not str or type(where) is not str:
        return None
    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        return None  # Path.glob refuses it itself, or it climbs out of the folder
    if ".." in where.split("/"):
        return None  # as in glob_spec
    base = rel(where)
    if base is None:
        return None
    base = base.rstrip("/") or "."
    opts = {k: bool(v) for k, v in kwargs.items() if v is not None}
    return [kind, base, pattern, opts]


# -- the wrappers ----------------------------------------------------------------------------------


class Hooks:
    """What the wrappers ask the recorder (zenbuild.trace sets it): ``note(spec_maker, frame)``
    records a spec made by ``spec_maker(rel)`` for the recording the event goes to and
    returns whether it did; ``quiet()`` / ``loud()`` bracket the wrapped call, during which
    this thread's listings and existence checks are not recorded (the spec stands for them)."""

    note: Callable[[Callable[[Callable[[Any], Optional[str]]], Optional[Spec]], Any], bool]
    quiet: Callable[[], None]
    loud: Callable[[], None]
    inside: Callable[[], bool]  # this thread is already inside a recorded glob


HOOKS = Hooks()


def _quietly(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    HOOKS.quiet()
    try:
        return fn(*a, **kw)
    finally:
        HOOKS.loud()


def _quiet_iter(it: Iterator[Any]) -> Iterator[Any]:
    """``it`` advanced with this thread's listings unrecorded (a lazy glob lists as it goes)."""
    while True:
        HOOKS.quiet()
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            HOOKS.loud()
        yield item


def _glob(pathname: Any, *args: Any, **kwargs: Any) -> Any:
    if HOOKS.inside() or not HOOKS.note(lambda rel: glob_spec(rel, pathname, args, kwargs),
                                        sys._getframe(1)):
        return _ORIG_GLOB(pathname, *args, **kwargs)
    return _quietly(_ORIG_GLOB, pathname, *args, **kwargs)


def _iglob(pathname: Any, *args: Any, **kwargs: Any) -> Any:
    if HOOKS.inside() or not HOOKS.note(lambda rel: glob_spec(rel, pathname, args, kwargs),
                                        sys._getframe(1)):
        return _ORIG_IGLOB(pathname, *args, **kwargs)
    return _quiet_iter(iter(_quietly(_ORIG_IGLOB, pathname, *args, **kwargs)))


def _path_glob(self: Any, pattern: Any, *args: Any, **kwargs: Any) -> Any:
    if HOOKS.inside() or not HOOKS.note(
            lambda rel: path_spec(rel, "path.glob", self, pattern, args, kwargs),
            sys._getframe(1)):
        return _ORIG_PATH_GLOB(self, pattern, *args, **kwargs)
    return _quiet_iter(iter(_quietly(_ORIG_PATH_GLOB, self, pattern, *args, **kwargs)))


def _path_rglob(self: Any, pattern: Any, *args: Any, **kwargs: Any) -> Any:
    if HOOKS.inside() or not HOOKS.note(
            lambda rel: path_spec(rel, "path.rglob", self, pattern, args, kwargs),
            sys._getframe(1)):
        return _ORIG_PATH_RGLOB(self, pattern, *args, **kwargs)
    return _quiet_iter(iter(_quietly(_ORIG_PATH_RGLOB, self, pattern, *args, **kwargs)))


for _w, _o in ((_glob, _ORIG_GLOB), (_iglob, _ORIG_IGLOB), (_path_glob, _ORIG_PATH_GLOB),
               (_path_rglob, _ORIG_PATH_RGLOB)):
    _w.__doc__, _w.__name__, _w.__qualname__ = _o.__doc__, _o.__name__, _o.__qualname__
    _w.__module__ = _o.__module__


def wrap() -> None:
    """Put the wrappers in place (the caller counts its users and holds its lock)."""
    _glob_mod.glob = _glob
    _glob_mod.iglob = _iglob
    pathlib.Path.glob = _path_glob  # type: ignore[method-assign]
    pathlib.Path.rglob = _path_rglob  # type: ignore[method-assign]


def unwrap() -> None:
    """Put the library's own functions back (only those this module replaced)."""
    if _glob_mod.glob is _glob:
        _glob_mod.glob = _ORIG_GLOB
    if _glob_mod.iglob is _iglob:
        _glob_mod.iglob = _ORIG_IGLOB
    if pathlib.Path.__dict__.get("glob") is _path_glob:
        pathlib.Path.glob = _ORIG_PATH_GLOB  # type: ignore[method-assign]
    if pathlib.Path.__dict__.get("rglob") is _path_rglob:
        pathlib.Path.rglob = _ORIG_PATH_RGLOB  # type: ignore[method-assign]
