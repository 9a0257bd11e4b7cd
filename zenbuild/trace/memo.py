"""Reads remembered by memoized project code, per process: what a project function that can keep
state between calls read while it ran, so that a later step served its remembered result (a
``functools.lru_cache``/``functools.cache`` hit, a lazily filled module-global or closure cache)
records those reads too, not only the step that happened to run it first.

Why: a trace records what happened while a step ran. Two steps that call one memoized loader
in one process (a serial run, one -j worker, the Python API called twice) see the file read, or
the environment variable looked up, only in the first of them; the second step's entry would
not name ``conf.json`` and would be served stale after it changed.

How:
- attribution: when a recording notes a read (file, listed folder, environment variable), the
  project frames on the stack whose code can keep state between calls get it, in ``_BY_CODE``.
  Such code is: the function of an lru/cache wrapper (found by its qualname in its module, a
  method through its class), code that assigns a global (``global X; X = ...``) or a closure
  variable, or that names a global or a closure variable holding a dict, list or set (a cache
  container). Plain helpers (``load(path)``) are left out: they would give every later step
  the files of every earlier call.
- merging, at the end of a step's recording: the reads of every such code the step ran (its
  traced calls; every one when calls were not traced) and of every lru wrapper whose hit count
  rose during the step (a hit runs no Python code, so only the count shows it). With call
  tracing off (``trace_calls = false``, or another profiler in the way below 3.12) only the
  wrappers' hits are known: a lazily filled global cache is then seen by its first user only,
  as code reached dynamically is not seen at all then.

A remembered file modified since the memo read it means the memo serves older content than
the file holds: the step's trace then starts no later than that read, so the commit's
changed-during-the-step rule keeps the result uncached (never stored as if it saw the file).

Over-approximation is the price: a memoized loader called with different arguments gives each
later caller the reads of all earlier calls (a rerun too many, never a stale result). Not seen:
a memo kept in a class attribute or on an instance, and a library's memo decorator with no
``cache_info`` (cachetools without info=True); sys.modules as a memo is the import tracking's.
"""

from __future__ import annotations

import os
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from zenbuild.paths import PACKAGE_DIR

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.trace import _Recording

_ZB_DIR = PACKAGE_DIR + os.sep
_CALLER = os.path.join(_ZB_DIR, "executors", "__init__.py")  # where a step's code is called
_STATEFUL_OPS: Optional[FrozenSet[int]] = None  # made by _stateful_ops()
_CONTAINERS = (dict, list, set)


class Remembered:
    """What one memo-capable code object read while it ran, in this process."""

    __slots__ = ("reads", "listed", "env")

    def __init__(self) -> None:
        self.reads: Dict[str, int] = {}  # rel -> wall clock (ns) when it was first read
        self.listed: Dict[str, None] = {}
        self.env: Dict[str, Optional[str]] = {}


_BY_CODE: Dict[Tuple[str, Any], Remembered] = {}  # (recording's root, code) -> its reads
_CAPABLE: Dict[Any, bool] = {}  # code -> whether it can keep state between calls
_WRAPPERS: Dict[Any, Any] = {}  # code -> the lru/cache wrapper whose function it is


def attribute(root: str, kind: str, key: str, value: Optional[str], frame: Any,
              lib: Tuple[str, ...]) -> None:
    """Give read ``key`` (``kind``: "reads", "listed" or "env", ``value`` an env value) to every
    memo-capable project code on the stack from ``frame`` up to the step's caller; paths are
    relative to ``root``, so what is remembered is kept per root."""
    f = frame
    while f is not None:
        code = f.f_code
        fn = code.co_filename
        if fn.startswith(_ZB_DIR):
            if fn == _CALLER:
                return
        elif not (fn.startswith("<") or fn.startswith(lib)) and code.co_name != "<module>":
            cap = _CAPABLE.get(code)
            if cap is None:
                cap = _CAPABLE[code] = _memo_capable(code, f)
            if cap:
                got = _BY_CODE.get((root, code))
                if got is None:
                    got = _BY_CODE[(root, code)] = Remembered()
                if kind == "env":
                    got.env.setdefault(key, value)
                elif kind == "reads":
                    if key not in got.reads:
                        got.reads[key] = time.time_ns()
                else:
                    got.listed[key] = None
        f = f.f_back


def _stateful_ops() -> FrozenSet[int]:
    """The opcodes that store into a global or a closure cell (opcode is imported by the
    first recording that needs them, not by every run: 2M instructions)."""
    global _STATEFUL_OPS
    import opcode

    _STATEFUL_OPS = frozenset(opcode.opmap[n] for n in ("STORE_GLOBAL", "DELETE_GLOBAL",
                                                        "STORE_DEREF", "DELETE_DEREF")
                              if n in opcode.opmap)
    return _STATEFUL_OPS


def _memo_capable(code: Any, frame: Any) -> bool:
    try:
        if _find_wrapper(code, frame.f_globals):
            return True
        raw = code.co_code
        ops = _STATEFUL_OPS or _stateful_ops()
        if any(raw[i] in ops for i in range(0, len(raw), 2)):
            return True
        g = frame.f_globals
        for name in code.co_names:
            if isinstance(g.get(name), _CONTAINERS):
                return True
        if code.co_freevars:
            loc = frame.f_locals  # free variables are in it
            for name in code.co_freevars:
                if isinstance(loc.get(name), _CONTAINERS):
                    return True
    except Exception:  # noqa: BLE001 - an odd frame: count it as capable (a rerun, not stale)
        return True
    return False


def _find_wrapper(code: Any, g: Dict[str, Any]) -> bool:
    """Whether ``code`` is the function of an lru/cache wrapper reachable by its qualname from
    its module's globals (a method: through its class's ``__dict__``); remembered in _WRAPPERS."""
    qual = getattr(code, "co_qualname", None)
    if qual is None:  # Python 3.10: no co_qualname, and a method's plain name finds nothing
        from zenbuild.trace.calls import qualname_310

        qual = qualname_310(code)
    parts = qual.split(".")
    if "<locals>" in parts:
        return False
    obj: Any = g.get(parts[0])
    for part in parts[1:]:
        d = getattr(obj, "__dict__", None)  # a class's: a mappingproxy
        obj = d.get(part) if isinstance(d, (dict, MappingProxyType)) else None
        if obj is None:
            return False
    for _ in range(8):  # a wrapper of a wrapper (staticmethod, another decorator) of it
        if obj is None:
            return False
        if hasattr(obj, "cache_info") and callable(obj.cache_info):
            inner = obj
            for _ in range(8):
                inner = getattr(inner, "__wrapped__", None)
                if getattr(inner, "__code__", None) is code:
                    _WRAPPERS[code] = obj
                    return True
                if inner is None:
                    break
        obj = getattr(obj, "__wrapped__", None) or getattr(obj, "__func__", None)
    return False


def hits() -> Optional[Dict[Any, int]]:
    """The hit count of every known wrapper (None when there is none: the usual case)."""
    if not _WRAPPERS:
        return None
    out: Dict[Any, int] = {}
    for code, w in list(_WRAPPERS.items()):
        try:
            out[code] = int(w.cache_info().hits)
        except Exception:  # noqa: BLE001 - a wrapper whose info fails: counted as a hit
            out[code] = -1
    return out


def remembered_for(root: str, codes: Optional[Set[Any]], before: Optional[Dict[Any, int]],
                   project: Optional[Callable[[Any], bool]] = None) -> Iterable[Remembered]:
    """What the memo-capable code a step used read before: of ``codes`` (the code it ran;
    None: calls not traced, so none is known) that ``project`` says is the project's (the call
    tracer of 3.12 collects any code that is not a library's, 3.11's only the project's), and
    of the wrappers whose hits rose since ``before`` (seen with or without call tracing)."""
    if not _BY_CODE:
        return []
    used = [c for c in codes if (root, c) in _BY_CODE and (project is None or project(c))
            ] if codes is not None else []
    if before:
        after = hits() or {}
        for code, n in after.items():
            if n < 0 or n > before.get(code, 0):
                used.append(code)
    out = []
    for code in set(used):
        got = _BY_CODE.get((root, code))
        if got is not None:
            out.append(got)
    return out


def has_remembered() -> bool:
    """Whether any memo-capable code read anything in this process (the usual case: none)."""
    return bool(_BY_CODE)


def add_remembered(rec: _Recording, traced: bool, before: Optional[Dict[Any, int]], t0: int,
                   stat: Callable[[str], Any]) -> int:
    """Put into ``rec``, a step's recording, what the memoized project code the step used read
    when it ran in an earlier step of this process (the merging described above); ``traced``:
    whether its calls were, ``before``: hits() when it started, ``stat``: os.stat, not wrapped.
    Returns the trace's start: ``t0``, or the time a remembered file was read when it was
    modified since (the memo's content is older than the file's: the commit then keeps the
    result uncached)."""
    project = None
    if traced and has_remembered():  # (the call tracer is imported once calls are traced)
        from zenbuild.trace import calls

        project = calls.project_code_filter(rec.root, rec.excluded)
    for got in remembered_for(rec.root, rec.codes if traced else None, before, project):
        if rec.opts.track_reads:
            for rel, when in got.reads.items():
                if rel in rec.inputs or (rel in rec.reads and when >= t0):
                    continue
                rec.reads.setdefault(rel, None)
                if when < t0:
                    try:
                        if stat(os.path.join(rec.root, rel)).st_mtime_ns >= when:
                            t0 = when
                    except OSError:
                        pass
            for rel in got.listed:
                rec.listed.setdefault(rel, None)
        if rec.opts.track_env:
            for key, value in got.env.items():
                if key not in rec.env_set and rec.env_wanted(key):
                    rec.env.setdefault(key, value)
    return t0


def forget() -> None:
    """Drop everything remembered (tests)."""
    _BY_CODE.clear()
    _CAPABLE.clear()
    _WRAPPERS.clear()
