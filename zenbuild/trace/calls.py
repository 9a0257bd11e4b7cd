"""Call tracing for the recorder: which code objects ran during a step, and which of them are
the project's own functions.

Python >= 3.12: ``sys.monitoring`` with a PY_START callback, turned on at the first recording
and left on. Code that is no project's whatever the root (zenbuild's own, the standard library's
and installed packages', frozen modules, generated code without a source) gets DISABLE once for
good; any other code is recorded at every call. restart_events() (which makes every code object
in the process be instrumented again, and cost a step of 1,000 more than its own work when done
before each step) is needed only after a code object called HOT_CALLS times was disabled: then
the next recording restarts events first, so it sees that code again. While several recordings
run at once in threads, no project code is disabled (none may miss a call).
Below 3.12: cProfile's C profiler (``builtins=False``) in the recording thread, skipped (the
trace then says calls were not traced) when another profiler is already set.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild.paths import PACKAGE_DIR, SKIP_DIRS, interactive_file, library_dirs

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.trace import _Recording

Target = Callable[[], "Optional[_Recording]"]
Count = Callable[[], int]

_ZB_DIR = PACKAGE_DIR + os.sep
MONITORING = sys.version_info >= (3, 12)
HOT_CALLS = 1000  # callbacks of one project code object before it is disabled until a restart


class _Tool:
    """The sys.monitoring state of one monitoring namespace (sys.monitoring, or a stand-in in
    tests): the tool id, whether PY_START is on, the callbacks' view of the active recordings,
    how many call recordings are under way, the callbacks per project code object since the last
    restart, and whether one was disabled since (``stale``: the next recording restarts)."""

    def __init__(self, mon: Any, tool: int) -> None:
        self.mon = mon
        self.tool = tool
        self.on = False
        self.users = 0
        self.target: Optional[Target] = None
        self.count: Optional[Count] = None
        self.fires: Dict[Any, int] = {}
        self.stale = False

    def callback(self, code: Any, offset: int) -> Any:
        mon = self.mon
        filename = code.co_filename
        never = _NEVER.get(filename)
        if never is None:
            never = _never_project(filename)
            if not filename.startswith("<"):  # a pseudo-file's status may change: not kept
                _NEVER[filename] = never
        if never:
            return mon.DISABLE  # for good: only restart_events() would enable it again
        target = self.target
        rec = target() if target is not None else None
        r: Optional[_Recording] = rec
        while r is not None:
            r.codes.add(code)
            r = r.parent
        fires = self.fires
        n = fires[code] = fires.get(code, 0) + 1
        if n >= HOT_CALLS:  # a hot loop: a callback per call costs more than a restart
            count = self.count
            if count is None or count() <= 1:  # never under another thread's recording
                self.stale = True
                return mon.DISABLE
        return None


_TOOLS: Dict[int, _Tool] = {}  # id(monitoring namespace) -> its state
_IDLE: List[Any] = []  # cProfile profilers (below 3.12) cleared after use, to be used again
_NEVER: Dict[str, bool] = {}  # co_filename -> no project's code, whatever the root
_LIBS: List[Tuple[str, ...]] = []


def _never_project(filename: str) -> bool:
    """Whether code from ``filename`` is no project's for any root: zenbuild's own, the
    interpreter's or an installed package's, a frozen module, or generated code with no source
    (``<string>``; a notebook cell's pseudo-file is a project's: see interactive_file)."""
    if filename.startswith("<"):
        return not interactive_file(filename)
    if not _LIBS:
        _LIBS.append(tuple(d + os.sep for d in library_dirs()))
    path = filename if os.path.isabs(filename) else os.path.abspath(filename)
    return path.startswith(_ZB_DIR) or path.startswith(_LIBS[0])


def _acquire_tool(mon: Any) -> Optional[_Tool]:
    got = _TOOLS.get(id(mon))
    if got is not None and got.mon is mon:
        return got
    for tool in (4, 3):  # 0-2 and 5 are the debugger, coverage, profiler and optimizer ids
        if mon.get_tool(tool) is None:
            mon.use_tool_id(tool, "zenbuild")
            got = _TOOLS[id(mon)] = _Tool(mon, tool)
            mon.register_callback(tool, mon.events.PY_START, got.callback)
            import atexit

            atexit.register(_release_tool, got)  # before modules are torn down at exit
            return got
    return None


def _release_tool(tool: _Tool) -> None:
    """Events off and the tool id given back. Left on, the callback would still fire while
    the interpreter shuts down, after this module's globals are gone ("Exception ignored in
    ...: 'NoneType' object has no attribute 'get'" at the exit of a Python API user)."""
    mon = tool.mon
    try:
        mon.set_events(tool.tool, 0)
        mon.register_callback(tool.tool, mon.events.PY_START, None)
        mon.free_tool_id(tool.tool)
    except Exception:  # noqa: BLE001 - a stand-in namespace, or the id already given back
        pass
    tool.on = False
    _TOOLS.pop(id(mon), None)


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
        self._tool: Optional[_Tool] = None
        # the step set a profiler of its own (cProfile, torch.profiler with_stack) over this
        # one (below 3.12 both use sys.setprofile): the calls after it are not known
        self.displaced = False

    def start(self) -> None:
        mon = self.mon
        if mon is not None:
            tool = _acquire_tool(mon)
            if tool is None:
                return
            tool.target, tool.count = self.target, self.count
            tool.users += 1
            if not tool.on:
                mon.set_events(tool.tool, mon.events.PY_START)  # left on: see the docstring
                tool.on = True
            elif tool.stale:  # project code was disabled: it must fire again
                tool.stale = False
                tool.fires = {}
                mon.restart_events()
            self._tool = tool
            return
        if sys.getprofile() is not None:  # a profiler or debugger already uses the hook
            return
        if _IDLE:  # cleared after its last use: making a new one cost more than clear()
            self._profiler = _IDLE.pop()
        else:
            import cProfile

            self._profiler = cProfile.Profile(builtins=False, subcalls=False)  # codes only
        self._profiler.enable()

    def stop(self) -> bool:
        tool = self._tool
        if tool is not None:  # events stay on: turning them off and on re-instruments all code
            tool.users = max(0, tool.users - 1)
            self._tool = None
            return True
        prof = self._profiler
        if prof is None:
            return False
        self.displaced = sys.getprofile() is not prof
        prof.disable()
        self._profiler = None
        rec = self.rec
        chain: List[_Recording] = []
        r: Optional[_Recording] = rec
        while r is not None:
            chain.append(r)
            r = r.parent
        stats = prof.getstats()
        prof.clear()
        if len(_IDLE) < 4:  # (threads recording at once each take their own)
            _IDLE.append(prof)
        if all(x.root == rec.root and x.excluded == rec.excluded for x in chain):
            # only the codes project_calls() would keep: a code object hashes its constants
            # (again at every set insertion), and most codes a step runs are libraries'
            codes = _project_codes(stats, rec.root, rec.excluded)
        else:  # pragma: no cover - nested recordings of different roots: keep them all
            codes = {e.code for e in stats if not isinstance(e.code, str)}
        for r in chain:
            r.codes.update(codes)
        return True


_PREFIXES: Dict[str, Tuple[str, ...]] = {}  # root -> (root/, realpath(root)/)
# (root, excluded) -> {co_filename: file key or None}: _file_key's answers, looked up inline
_KEYS: Dict[Tuple[str, Tuple[str, ...]], Dict[str, Optional[str]]] = {}
_UNSET: Any = object()


def _prefixes(root: str) -> Tuple[str, ...]:
    prefixes = _PREFIXES.get(root)
    if prefixes is None:  # realpath costs a syscall per component: once per root a process
        prefixes = _PREFIXES[root] = tuple({root + os.sep, os.path.realpath(root) + os.sep})
    return prefixes


def _keys(root: str, excluded: Tuple[str, ...]) -> Dict[str, Optional[str]]:
    got = _KEYS.get((root, excluded))
    if got is None:
        got = _KEYS[(root, excluded)] = {}
    return got


def _key_of(keys: Dict[str, Optional[str]], filename: str, root: str,
            excluded: Tuple[str, ...]) -> Optional[str]:
    """_file_key of ``filename``, remembered in ``keys`` (the _keys dict of root, excluded)."""
    key = keys.get(filename, _UNSET)
    if key is _UNSET:
        key = keys[filename] = _file_key(filename, _prefixes(root), excluded, root)
    return key


def _project_codes(stats: Any, root: str, excluded: Tuple[str, ...]) -> Set[Any]:
    """The code objects among cProfile ``stats`` entries whose file is a project file
    (_file_key not None), the ones project_calls() keeps."""
    keys = _keys(root, excluded)
    out: Set[Any] = set()
    for e in stats:
        code = e.code
        if type(code) is str:  # a built-in (not profiled with builtins=False)
            continue
        if _key_of(keys, code.co_filename, root, excluded) is not None:
            out.add(code)
    return out


def _file_key(filename: str, prefixes: Tuple[str, ...], excluded: Tuple[str, ...],
              root: str) -> Optional[str]:
    """The project file key of ``filename`` (relative posix, or "<__main__>" for a cell), or
    None when it is no project's. Called through _key_of, which remembers its answers per
    (root, excluded)."""
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
    return key


def project_code_filter(root: str, excluded: Tuple[str, ...]) -> Callable[[Any], bool]:
    """Whether a code object is one _project_codes() would keep for ``root`` (a project file's):
    on 3.12 a recording's codes also hold code outside the root that is no library's."""
    keys = _keys(root, excluded)
    return lambda code: _key_of(keys, code.co_filename, root, excluded) is not None


def project_calls(codes: Set[Any], root: str, excluded: Tuple[str, ...]) -> List[List[Any]]:
    """``[file key, qualname, firstlineno]`` for each project function among ``codes``, sorted;
    module bodies are left out (their code is the module's, fingerprinted statically)."""
    keys = _keys(root, excluded)
    out: Set[Tuple[str, str, int]] = set()
    for code in codes:
        if code.co_name == "<module>":
            continue
        key = _key_of(keys, code.co_filename, root, excluded)
        if key is not None:
            out.add((key, code_qualname(code), code.co_firstlineno))
    return [list(t) for t in sorted(out)]


def code_qualname(code: Any) -> str:
    """``code.co_qualname``; on Python 3.10, which has none, qualname_310(code)."""
    got = getattr(code, "co_qualname", None)
    return got if got is not None else qualname_310(code)


_QUALS: Dict[str, Tuple[Tuple[int, int], Dict[Tuple[str, int], str]]] = {}


def qualname_310(code: Any) -> str:
    """The qualified name Python >= 3.11 gives ``code`` (``Scaler.transform``,
    ``f.<locals>.<listcomp>``), found in its file's syntax tree by name and first line:
    Python 3.10's code objects have only co_name, and the trace's record finds a function again
    by its qualname (a method's plain name would find nothing, and its edits would go unseen).
    The plain name when the file cannot be read or the def is not found in it."""
    path = code.co_filename
    try:
        st = os.stat(path)
    except OSError:
        return str(code.co_name)
    got = _QUALS.get(path)
    if got is None or got[0] != (st.st_mtime_ns, st.st_size):
        got = _QUALS[path] = ((st.st_mtime_ns, st.st_size), _qualnames(path))
    return got[1].get((code.co_name, code.co_firstlineno), str(code.co_name))


_SCOPES = {"ListComp": "<listcomp>", "SetComp": "<setcomp>", "DictComp": "<dictcomp>",
           "GeneratorExp": "<genexpr>", "Lambda": "<lambda>"}


def _qualnames(path: str) -> Dict[Tuple[str, int], str]:
    """(co_name, co_firstlineno) -> qualname of every def, class, lambda and comprehension in
    the file at ``path`` (a decorated def under its decorator's line too, where 3.10 puts it)."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return {}
    out: Dict[Tuple[str, int], str] = {}

    def visit(node: Any, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            kind = type(child).__name__
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = prefix + child.name
                lines = [child.lineno] + [d.lineno for d in child.decorator_list[:1]]
                for line in lines:
                    out.setdefault((child.name, line), qual)
                inner = qual + (".<locals>." if not isinstance(child, ast.ClassDef) else ".")
                visit(child, inner)
            elif kind in _SCOPES:
                name = _SCOPES[kind]
                out.setdefault((name, getattr(child, "lineno", 0)), prefix + name)
                visit(child, prefix + name + ".<locals>.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out
