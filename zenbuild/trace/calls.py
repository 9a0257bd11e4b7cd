"""Call tracing for the recorder: which code objects ran during a step, and which of them are
the project's own functions.

Python >= 3.12: ``sys.monitoring`` with a PY_START callback that returns DISABLE, so each code
object costs one callback per step (events are re-enabled when the last recording ends; while
several recordings run at once in threads, DISABLE is not returned so none misses a call).
Below 3.12: cProfile's C profiler (``builtins=False``) in the recording thread, skipped (the
trace then says calls were not traced) when another profiler is already set.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild.paths import PACKAGE_DIR, SKIP_DIRS, interactive_file

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.trace import _Recording

Target = Callable[[], "Optional[_Recording]"]
Count = Callable[[], int]

_ZB_DIR = PACKAGE_DIR + os.sep
MONITORING = sys.version_info >= (3, 12)


class _Monitor:
    """Process-wide sys.monitoring state: the tool id (acquired once), the callbacks' view of
    the active recordings, and how many call recordings are under way."""

    tool: Optional[int] = None
    mon: Any = None  # sys.monitoring (or a stand-in in tests)
    users = 0
    target: Optional[Target] = None
    count: Optional[Count] = None


def _py_start(code: Any, offset: int) -> Any:
    mon = _Monitor.mon
    target = _Monitor.target
    rec = target() if target is not None else None
    if rec is None:
        return mon.DISABLE
    r: Optional[_Recording] = rec
    while r is not None:
        r.codes.add(code)
        r = r.parent
    count = _Monitor.count
    return mon.DISABLE if count is None or count() <= 1 else None


def _acquire_tool(mon: Any) -> Optional[int]:
    if _Monitor.tool is not None:
        return _Monitor.tool
    for tool in (4, 3):  # 0-2 and 5 are the debugger, coverage, profiler and optimizer ids
        if mon.get_tool(tool) is None:
            mon.use_tool_id(tool, "zenbuild")
            mon.register_callback(tool, mon.events.PY_START, _py_start)
            _Monitor.tool, _Monitor.mon = tool, mon
            return tool
    return None


class CallTracer:
    """Starts and stops call tracing for one recording; ``stop()`` says whether it traced."""

    def __init__(self, rec: _Recording, target: Target, count: Count,
                 monitoring: Optional[Any] = None) -> None:
        self.rec = rec
        self.target = target
        self.count = count
        self.mon = monitoring if monitoring is not None else (
            getattr(sys, "monitoring", None) if MONITORING else None)
        self._profiler: Any = None
        self._mon_on = False

    def start(self) -> None:
        mon = self.mon
        if mon is not None:
            tool = _acquire_tool(mon)
            if tool is None:
                return
            _Monitor.target, _Monitor.count = self.target, self.count
            _Monitor.users += 1
            if _Monitor.users == 1:
                mon.restart_events()  # what an earlier step DISABLEd must fire again
                mon.set_events(tool, mon.events.PY_START)
            self._mon_on = True
            return
        if sys.getprofile() is not None:  # a profiler or debugger already uses the hook
            return
        import cProfile

        self._profiler = cProfile.Profile(builtins=False, subcalls=False)  # codes only
        self._profiler.enable()

    def stop(self) -> bool:
        if self._mon_on:
            mon: Any = self.mon
            _Monitor.users -= 1
            if _Monitor.users <= 0 and _Monitor.tool is not None:
                _Monitor.users = 0
                mon.set_events(_Monitor.tool, 0)
            self._mon_on = False
            return True
        prof = self._profiler
        if prof is None:
            return False
        prof.disable()
        self._profiler = None
        r: Optional[_Recording] = self.rec
        codes = {e.code for e in prof.getstats() if not isinstance(e.code, str)}
        while r is not None:
            r.codes.update(codes)
            r = r.parent
        return True


_KIND: Dict[Tuple[str, str], Optional[str]] = {}  # (root, co_filename) -> file key or None
_PREFIXES: Dict[str, Tuple[str, ...]] = {}  # root -> (root/, realpath(root)/)


def _file_key(filename: str, prefixes: Tuple[str, ...], excluded: Tuple[str, ...],
              root: str) -> Optional[str]:
    memo = _KIND.get((root, filename), "?")
    if memo != "?":
        return memo
    key: Optional[str] = None
    path = filename if os.path.isabs(filename) else os.path.abspath(filename)
    if path.startswith(_ZB_DIR):
        key = None
    elif path.endswith(".py") and path.startswith(prefixes):
        for pre in prefixes:
            if path.startswith(pre):
                rel = path[len(pre):].replace(os.sep, "/")
                parts = rel.split("/")
                if not rel.startswith(excluded) and not any(p in SKIP_DIRS for p in parts):
                    key = rel
                break
    elif interactive_file(filename):
        key = "<__main__>"  # a notebook cell or exec'd source: found again through __main__
    _KIND[(root, filename)] = key
    return key


def project_calls(codes: Set[Any], root: str, excluded: Tuple[str, ...]) -> List[List[Any]]:
    """``[file key, qualname, firstlineno]`` for each project function among ``codes``, sorted;
    module bodies are left out (their code is the module's, fingerprinted statically)."""
    prefixes = _PREFIXES.get(root)
    if prefixes is None:  # realpath costs a syscall per component: once per root a process
        prefixes = _PREFIXES[root] = tuple({root + os.sep, os.path.realpath(root) + os.sep})
    out: Set[Tuple[str, str, int]] = set()
    for code in codes:
        name = getattr(code, "co_qualname", code.co_name)
        if name == "<module>":
            continue
        key = _file_key(code.co_filename, prefixes, excluded, root)
        if key is not None:
            out.add((key, name, code.co_firstlineno))
    return [list(t) for t in sorted(out)]
