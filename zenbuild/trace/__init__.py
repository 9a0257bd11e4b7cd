"""The dynamic-trace recorder: what a step really touched while its own code ran (files it read
and wrote, folders it listed, environment variables it read, project functions it executed),
as a small JSON-able Trace that travels back to the scheduler with the step's result.

How it sees things:
- files and folders (trace/hooks.py): one ``sys.addaudithook`` per process (hooks cannot be
  removed), installed on the first recording and a no-op (one truth test) while nothing
  records. The ``open`` event covers open(), io.open() and os.open(); its flags tell a read
  from a write; a child process (``subprocess``, ``os.system``) reads the project files its
  command line names. While a step runs, os.stat is wrapped for existence checks and the glob
  functions for listings through a pattern (trace/probes.py, trace/globs.py).
- environment (trace/hooks.py): ``os._Environ.__getitem__`` (which ``get``, ``in`` and
  ``os.getenv`` go through) of ``os.environ`` and of ``os.environb`` (bytes: recorded by the
  names and values os.environ shows, os.fsdecode'd) is wrapped while a recording is active and
  put back when the last one ends, even when the step raised. A read of the whole environment
  (a copy, ``dict(os.environ)``, iteration, a child process inheriting it) reads every tracked
  variable and keeps the set of names (Trace.env_all). Which variables count, and which values
  are hidden: trace/secrets.py.
- files native code opens (pyarrow, polars, SQLite): zenbuild.trace.native wraps their path
  choke points while a recording is active, and the ``sqlite3.connect`` audit event.
- calls: ``sys.monitoring`` PY_START returning DISABLE (Python >= 3.12: one callback per code
  object per step), else cProfile's C profiler (``builtins=False``) in the recording thread
  (trace/calls.py); project modules used: trace/modules.py; earlier reads of memoized code:
  trace/memo.py.

Attribution: a recording is tied to the context (thread) that started it; an event from a
thread with no recording of its own goes to the only active recording, if there is exactly one
(threads a step starts). Events from zenbuild's own code and the import system are ignored.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Optional,
    Set,
    Tuple,
)

from zenbuild.paths import PACKAGE_DIR, SKIP_DIRS, library_dirs
from zenbuild.records import field, record
from zenbuild.trace import forks, memo
from zenbuild.trace.secrets import BULK_IGNORE_ENV as BULK_IGNORE_ENV
from zenbuild.trace.secrets import BULK_IGNORE_PREFIXES as BULK_IGNORE_PREFIXES
from zenbuild.trace.secrets import DENY_ENV as DENY_ENV
from zenbuild.trace.secrets import DENY_ENV_PREFIXES as DENY_ENV_PREFIXES
from zenbuild.trace.secrets import KEY_FILE as KEY_FILE
from zenbuild.trace.secrets import KEY_SIZE as KEY_SIZE
from zenbuild.trace.secrets import _env_filter
from zenbuild.trace.secrets import bulk_wanted as bulk_wanted
from zenbuild.trace.secrets import env_filter as env_filter
from zenbuild.trace.secrets import is_hidden as is_hidden
from zenbuild.trace.secrets import is_secret as is_secret
from zenbuild.trace.secrets import keyed_digest as keyed_digest
from zenbuild.trace.secrets import looks_like_credential as looks_like_credential
from zenbuild.trace.secrets import secret_key as secret_key

_IN_CHILD = forks.IN_CHILD  # a forked worker of a recording process (trace/forks.py)

if TYPE_CHECKING:  # pragma: no cover - the call tracer is imported when a step is recorded
    from zenbuild.trace.calls import CallTracer

TRACE_FORMAT = 1

# -- the record ---------------------------------------------------------------------------------


@record
class Trace:
    """What one step touched. Paths are project-relative posix; ``env`` maps a variable to the
    value it had when first read, or None when it was missing; ``calls`` holds
    ``[file, qualname, firstlineno]`` with ``file`` project-relative, or ``"<__main__>"`` for
    code with no file on disk (notebook cells). ``reads_traced``/``env_traced``/``calls_traced``
    say which parts were recorded (a part not recorded verifies nothing). ``started_ns`` is the
    wall clock when the step started: a read file modified after it changed during the step.
    ``globs`` holds the listings made through a pattern (glob.glob, Path.glob: trace/globs.py
    specs, ``[kind, base, pattern, opts]``, with the digest of their matches when first made,
    or None when they could not be evaluated); the folders they listed are not in ``listed``."""

    reads: List[str] = field(default_factory=list)
    writes: List[str] = field(default_factory=list)  # written, not a declared Output
    listed: List[str] = field(default_factory=list)
    env: Dict[str, Optional[str]] = field(default_factory=dict)
    calls: List[List[Any]] = field(default_factory=list)
    reads_traced: bool = False
    env_traced: bool = False
    calls_traced: bool = False
    started_ns: int = 0
    globs: List[List[Any]] = field(default_factory=list)
    listed_at: Dict[str, Optional[str]] = field(default_factory=dict)  # listing_digest() of
    # a folder in ``listed`` when the step first listed it, before it looked
    # project modules (files) the step imported or whose module object it touched
    modules: List[str] = field(default_factory=list)
    # the tracked variables set when the step first read os.environ whole (a copy, items(),
    # iteration: pydantic-settings, ``{**os.environ}``, a subprocess), None if it never did;
    # their values are in ``env`` like any read, so a variable set, changed or unset later
    # reruns the step; the ones the step set itself are listed too, without a value in ``env``
    env_all: Optional[List[str]] = None
    # the step replaced the call tracer with a profiler of its own (Python < 3.12): the code
    # it ran after that is unknown, so its result must not be cached (commit.calls_displaced)
    calls_displaced: bool = False
    # files that existed before the step ran, that it read (or named on a child process's
    # command line) and then changed: not idempotent, so not cached (commit.rewritten)
    rewrites: List[str] = field(default_factory=list)
    # the classes whose subclasses the step asked for (``Base.__subclasses__()``), each with
    # its named project subclasses when the step ended: [[module, qualname, [[module,
    # qualname, imported while the step ran], ...]], ...] (trace/subclasses.py)
    subclasses: List[List[Any]] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"format": TRACE_FORMAT, "reads": self.reads, "writes": self.writes,
                "listed": self.listed, "env": self.env, "calls": self.calls,
                "reads_traced": self.reads_traced, "env_traced": self.env_traced,
                "calls_traced": self.calls_traced, "started_ns": self.started_ns,
                "globs": self.globs, "listed_at": self.listed_at, "modules": self.modules,
                "env_all": self.env_all, "calls_displaced": self.calls_displaced,
                "rewrites": self.rewrites, "subclasses": self.subclasses}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Trace:
        return cls(list(d.get("reads", [])), list(d.get("writes", [])),
                   list(d.get("listed", [])), dict(d.get("env", {})),
                   [list(c) for c in d.get("calls", [])], bool(d.get("reads_traced")),
                   bool(d.get("env_traced")), bool(d.get("calls_traced")),
                   int(d.get("started_ns", 0)), [list(g) for g in d.get("globs", [])],
                   dict(d.get("listed_at", {})), list(d.get("modules", [])),
                   None if d.get("env_all") is None else list(d["env_all"]),
                   bool(d.get("calls_displaced")), list(d.get("rewrites", [])),
                   [list(e) for e in d.get("subclasses", [])])


@record
class TraceOptions:
    """What a recording needs, sent with each Task (picklable). ``outputs`` are the step's
    declared Output paths (files or folders, project-relative); ``ignore_env`` holds names or
    fnmatch patterns from ``[fingerprint] ignore_env``; ``inputs`` the declared input files
    (the static key covers them: opening one is not recorded, which spares the look at the
    caller's frames; a Trace never needed them, see discovered.build and commit.reads_changed)."""

    root: str
    store_dir: str = ""
    outputs: Tuple[str, ...] = ()
    track_reads: bool = True
    track_env: bool = True
    trace_calls: bool = False
    ignore_env: Tuple[str, ...] = ()
    inputs: FrozenSet[str] = frozenset()


# -- where a path or a frame belongs ---------------------------------------------------------------

_ZB_DIR = PACKAGE_DIR + os.sep
_GLOBS_FILE = os.path.join(_ZB_DIR, "trace", "globs.py")
# Where a walk up from an event through library frames only means the step itself called the
# library (_from_user: its event counts): the executor's file, which calls a step's code, and the
# recorder's, this one and those split out of it (their frames stand where this file's did: the
# os.environ and os.stat wrappers, the audit hook, the store's key). Any other file of zenbuild's
# means zenbuild's own work.
_BOUNDARY_FILES = frozenset({
    os.path.abspath(__file__),
    *(os.path.join(os.path.dirname(os.path.abspath(__file__)), f)
      for f in ("hooks.py", "probes.py", "secrets.py")),
    os.path.join(_ZB_DIR, "executors", "__init__.py")})
# the library folders (stdlib, site-packages): found when the first step is recorded, so a
# no-op run never pays for site's look-ups
_LIB: Tuple[str, ...] = ()


def _lib() -> Tuple[str, ...]:
    global _LIB
    if not _LIB:
        _LIB = tuple(d + os.sep for d in library_dirs())
    return _LIB


_EXTERNAL = "<frozen importlib._bootstrap_external>"


def _from_user(f: Any) -> bool:
    """Whether the event whose Python caller is frame ``f`` comes from user code: library
    frames are skipped; an import under way (a frame of importlib._bootstrap: the import system
    loading a module) or zenbuild's own code means no. A loader called directly
    (``pkgutil.get_data``, ``spec.loader.exec_module(mod)`` of a config file loaded by path)
    runs only importlib._bootstrap_external frames: skipped like a library's, so its reads count."""
    n = 0
    while f is not None and n < 64:
        fn = f.f_code.co_filename
        if fn.startswith("<frozen importlib"):
            if fn != _EXTERNAL:
                return False
            f = f.f_back
            n += 1
            continue
        if fn == _GLOBS_FILE:  # the glob wrappers stand in for the library call: look past
            f = f.f_back
            n += 1
            continue
        if fn.startswith(_ZB_DIR):
            return fn in _BOUNDARY_FILES  # reached the recorder: library code all the way
        if not (fn.startswith(_lib()) or fn.startswith("<frozen")):
            return True
        f = f.f_back
        n += 1
    return True


# compiled at import: every no-op uses it (the top-level trace), and every file a step
# touches goes through it, which a LazyPattern would add an attribute lookup to
_SKIP_RX = re.compile("(?:^|/)(?:__pycache__|" + "|".join(re.escape(d) for d in SKIP_DIRS)
                     + ")(?:/|$)")
_cwd: List[Optional[str]] = [None]  # cached os.getcwd(), dropped on every os.chdir event
_ORIG_STAT = os.stat  # as it was when zenbuild.trace was imported (trace/probes.py wraps it)


# (root, store_dir) -> (root prefixes, excluded project-relative prefixes) of a recording
_PLACES: Dict[Tuple[str, str], Tuple[Tuple[str, ...], Tuple[str, ...]]] = {}


class _Recording:
    """The live state of one recording."""

    def __init__(self, opts: TraceOptions, parent: Optional[_Recording],
                 isolated: bool = False) -> None:
        self.parent = parent
        self.isolated = isolated  # an import's recording: sees only events aimed at it
        self.modules: Set[str] = set()  # project modules used (trace.modules)
        self.opts = opts
        root = _ABS.get(opts.root)
        if root is None:
            root = os.path.abspath(opts.root)  # a relative root depends on the cwd: not kept
            if os.path.isabs(opts.root):
                _ABS[opts.root] = root
        self.root = root
        memo = _PLACES.get((root, opts.store_dir))
        if memo is None:  # realpath costs ~8 syscalls a path: once per (root, store) a process
            prefixes = tuple({root + os.sep, os.path.realpath(root) + os.sep})
            excluded: List[str] = []
            for p in (opts.store_dir, sys.prefix, sys.base_prefix, sys.exec_prefix,
                      *(x.rstrip(os.sep) for x in _lib())):
                if not p:
                    continue
                for form in {os.path.abspath(p), os.path.realpath(p)}:
                    for pre in prefixes:
                        if (form + os.sep).startswith(pre):
                            excluded.append(form[len(pre):].replace(os.sep, "/") + "/")
            memo = _PLACES[(root, opts.store_dir)] = (prefixes, tuple(excluded) or ("\0",))
        self.prefixes, self.excluded = memo
        self.outputs = tuple([o.rstrip("/") for o in opts.outputs])
        self._below = tuple([o + "/" for o in self.outputs])  # declared(): inside() at once
        self.inputs = opts.inputs
        # what finish() drops anyway (a declared output) or no one needs (a declared input)
        # need not be looked at, unless a recording above this one hears of it too
        self.alone = _up(self) is None
        self.reads: Dict[str, None] = {}
        self.writes: Dict[str, None] = {}
        self.listed: Dict[str, None] = {}
        self.databases: Dict[str, Any] = {}  # SQLite file -> its state at the first connect
        self.spawned: Dict[str, Any] = {}  # a file a subprocess was given -> its stat then
        # (None: not there), and those of them given as an input or read before (not after
        # an output option: -o FILE, > FILE)
        self.spawn_in: Set[str] = set()
        self.rewrites: Dict[str, None] = {}  # read (or given) before it ran, then changed
        self.listed_at: Dict[str, Optional[str]] = {}
        self.globs: Dict[Tuple[Any, ...], List[Any]] = {}  # listings through a pattern
        self.env: Dict[str, Optional[str]] = {}
        self.env_set: Set[str] = set()
        self.env_wanted = _env_filter(opts.ignore_env)
        self.bulk: Optional[List[str]] = None  # keys of an iteration of os.environ under way
        self.bulk_pos = 0
        self.env_all: Optional[List[str]] = None  # Trace.env_all
        self.codes: Set[Any] = set()
        # threads alive before the recording began, other than its own: a Dask worker's
        # profiler reads source files through linecache; a pool the project made earlier may
        # run the step's work. Their events count only with user code on their stack.
        self.thread = threading.get_ident()
        alive = threading.enumerate()
        self.foreign = (_NO_THREADS if len(alive) == 1 and alive[0].ident == self.thread
                        else frozenset(t.ident for t in alive) - {self.thread})

    def rel(self, path: Any) -> Optional[str]:
        """Project-relative posix form of an opened path, or None when it is not of interest."""
        if isinstance(path, int):
            return None
        if not isinstance(path, str):
            try:
                path = os.fsdecode(path)
            except TypeError:
                return None
        if not path.startswith(os.sep):
            cwd = _cwd[0]
            if cwd is None:
                cwd = _cwd[0] = os.getcwd()
            path = os.path.join(cwd, path)
        if "/." in path or "//" in path:
            path = os.path.normpath(path)
        for pre in self.prefixes:
            if path.startswith(pre):
                rel = path[len(pre):]
                break
        else:
            if path + os.sep in self.prefixes:
                return "."
            return None
        if os.sep != "/":  # pragma: no cover - Windows
            rel = rel.replace(os.sep, "/")
        if rel.startswith(self.excluded) or rel.endswith((".pyc", ".pyo")):
            return None
        if _SKIP_RX.search(rel) is not None:
            return None
        return rel

    def declared(self, rel: str) -> bool:
        """Whether ``rel`` is a declared Output or inside one (paths.inside for each)."""
        return rel in self.outputs or rel.startswith(self._below)

    def dismissed(self, rel: str) -> bool:
        """Whether a touch of ``rel`` need not be looked at: a declared input, or a declared
        output or inside one, while no recording above this one hears of it (``alone``)."""
        return self.alone and (rel in self.inputs or self.declared(rel))

    def finish(self, started_ns: int, calls: List[List[Any]], calls_traced: bool) -> Trace:
        root = self.root
        if forks.FORKED[0]:  # what forked workers noted since the last recording ended
            for kind, key, value in forks.collect():
                if kind in ("reads", "writes", "listed", "rewrites") and type(key) is str:
                    getattr(self, kind)[key] = None
                elif kind == "env" and type(key) is str and key not in self.env_set:
                    self.env.setdefault(key, value)
                elif kind == "env_all" and type(key) is list and self.env_all is None:
                    self.env_all = [n for n in key if type(n) is str]
        reads: List[str] = []
        undeclared: List[str] = []
        if self.databases:  # a SQLite database the step changed is its write, not its
            # input (a tracking or study store it logs to: mlflow, optuna), which would
            # otherwise count as an input changed while the step ran, and rerun it every time;
            # like any file it read and wrote, it is named as an undeclared write
            for rel in (_NATIVE or _native()).changed_databases(root, self.databases):
                self.writes[rel] = None
        for rel, was in self.spawned.items():  # a file given to a subprocess that changed
            try:  # while the step ran is what the child wrote (`sort -o out in`, a file it
                st = _ORIG_STAT(os.path.join(root, rel))  # made), not an input that changed
                now: Any = (st.st_size, st.st_mtime_ns, st.st_ino)  # under it; unless it was
            except OSError:  # there before and given as an input (`sed -i`): rewritten
                now = None
            if now != was:
                self.writes[rel] = None
                if rel in self.spawn_in:
                    self.rewrites[rel] = None
            elif was is not None and rel not in self.spawn_in:  # named after an output option
                self.reads[rel] = None  # but left as it was: maybe no output at all (`python
                # -O script.py`), so a read, as any file a command line names
        rewrites = (sorted(r for r in self.rewrites if not self.declared(r)) if self.rewrites
                    else [])  # (a declared input too, which neither list below keeps)
        if self.writes or self.reads:  # (most steps read and wrote only declared files)
            writes = set(self.writes)
            reads = sorted(r for r in self.reads if r not in writes and not self.declared(r))
            undeclared = sorted(w for w in writes if not self.declared(w)
                                and w not in self.rewrites
                                and os.path.lexists(os.path.join(root, w)))
        globs = [self.globs[k] for k in sorted(self.globs)] if self.globs else []
        env_all = self.env_all
        if env_all is not None and self.env_set:  # names the step set itself are its own:
            # never "set since" on a later check (a watch process keeps what a step set)
            wanted = self.env_wanted
            env_all = sorted(set(env_all) | {n for n in self.env_set if type(n) is str
                                             and bulk_wanted(n, wanted)})
        return Trace(reads, undeclared, sorted(self.listed) if self.listed else [],
                     dict(self.env), calls, self.opts.track_reads, self.opts.track_env,
                     calls_traced, started_ns, globs, dict(self.listed_at),
                     sorted(self.modules), env_all, False, rewrites)


_NO_THREADS: frozenset = frozenset()
_ABS: Dict[str, str] = {}  # an absolute root as given -> os.path.abspath of it

_CURRENT: ContextVar[Optional[_Recording]] = ContextVar("zenbuild_trace", default=None)
_ACTIVE: List[_Recording] = []  # every recording under way in this process
_LOCK = threading.Lock()


_UNRECORDED: Set[int] = set()  # threads whose events no recording takes (unrecorded())


def _target() -> Optional[_Recording]:
    """The recording an event in this thread goes to: the one entered in this thread (or its
    context), else the only one under way, for a thread the step started. A thread that was
    already running when the recording began is only trusted when its stack holds user code;
    a thread inside unrecorded() never is."""
    rec = _CURRENT.get()
    if rec is None and len(_ACTIVE) == 1:
        ident = threading.get_ident()
        if ident in _UNRECORDED:
            return None
        rec = _ACTIVE[0]
        if ident in rec.foreign and not _user_on_stack(sys._getframe(1)):
            return None
    return rec


def unrecorded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in this thread with none of its file, environment or call events
    going to a recording that does not belong to the thread: for zenbuild's own helper threads
    that run user code outside any step, such as a version probe that outlived its timeout
    while a step runs (its reads are not the step's)."""
    ident = threading.get_ident()
    _UNRECORDED.add(ident)
    try:
        return fn(*args, **kwargs)
    finally:
        _UNRECORDED.discard(ident)


def _user_on_stack(f: Any) -> bool:
    """Whether any frame from frame ``f`` up is user code (not a library, not zenbuild)."""
    lib = _lib()
    while f is not None:
        fn = f.f_code.co_filename
        if not (fn.startswith(lib) or fn.startswith(_ZB_DIR) or fn.startswith("<")):
            return True
        f = f.f_back
    return False


# -- what an event goes to ---------------------------------------------------------------------


def _up(r: _Recording) -> Optional[_Recording]:
    """The next recording an event also goes to: the parent, past import recordings (a module's
    import reads belong to that module alone, not to the module importing it)."""
    p = r.parent
    while p is not None and p.isolated:
        p = p.parent
    return p


def _note(rec: _Recording, kind: str, rel: str) -> None:
    """Put ``rel`` in the ``kind`` ("reads", "writes" or "listed") of ``rec`` and of every
    recording it passes events up to."""
    r: Optional[_Recording] = rec
    while r is not None and r.opts.track_reads:
        getattr(r, kind)[rel] = None
        r = _up(r)
    if _IN_CHILD[0]:  # a forked worker: the recording in the parent needs it (trace/forks.py)
        forks.send(kind, rel)


# -- the recorder ---------------------------------------------------------------------------------

_SUBCLASSES = "__subclasses__"  # a name whose use trace/subclasses.py records
_CALLS: Any = None  # zenbuild.trace.calls, imported when the first step's calls are traced


def _load_calls() -> Any:
    global _CALLS
    from zenbuild.trace import calls

    _CALLS = calls
    return calls


# zenbuild.trace.native (paths given to pyarrow, polars and sqlite3, whose reads are native):
# imported when the first step's reads are recorded
_NATIVE: Any = None


def _native() -> Any:
    global _NATIVE
    from zenbuild.trace import native

    _NATIVE = native
    return native


# zenbuild.trace.probes (the os.stat wrapper, listings through a pattern): imported when the
# first step is recorded
_PROBES: Any = None


def _probes() -> Any:
    global _PROBES
    from zenbuild.trace import probes

    _PROBES = probes
    return probes


def merge_into(trace: Trace, before: Trace) -> None:
    """Add to ``trace`` what ``before`` recorded, earlier, for the same step (its arguments'
    decoding: a value type's load() reading a file): reads, writes, listings, variables (the
    value first seen wins), calls, patterns, modules. A part either left unrecorded is
    unrecorded in the whole."""
    def union(a: List[Any], b: List[Any]) -> List[Any]:
        seen: Dict[str, Any] = {}
        for x in a + b:
            seen.setdefault(repr(x), x)
        return list(seen.values())

    trace.reads = union(before.reads, trace.reads)
    trace.writes = union(before.writes, trace.writes)
    trace.listed = union(before.listed, trace.listed)
    trace.env = {**trace.env, **before.env}
    trace.calls = union(before.calls, trace.calls)
    trace.globs = union(before.globs, trace.globs)
    trace.listed_at = {**trace.listed_at, **before.listed_at}
    trace.modules = union(before.modules, trace.modules)
    trace.rewrites = union(before.rewrites, trace.rewrites)
    trace.subclasses = union(before.subclasses, trace.subclasses)
    if before.env_all is not None:
        trace.env_all = union(before.env_all, trace.env_all or [])
    trace.reads_traced = trace.reads_traced and before.reads_traced
    trace.env_traced = trace.env_traced and before.env_traced
    trace.calls_traced = trace.calls_traced and before.calls_traced
    trace.calls_displaced = trace.calls_displaced or before.calls_displaced
    if before.started_ns and (not trace.started_ns or before.started_ns < trace.started_ns):
        trace.started_ns = before.started_ns


class Recorder:
    """``with Recorder(opts) as r: ...`` records what the block touches; ``r.trace`` holds the
    Trace afterwards (also when the block raised)."""

    def __init__(self, opts: TraceOptions, isolated: bool = False) -> None:
        self.opts = opts
        self.isolated = isolated
        self.trace: Optional[Trace] = None
        self._rec: Optional[_Recording] = None
        self._token: Any = None
        self._calls: Optional[CallTracer] = None
        self._t0 = 0
        self._hits: Optional[Dict[Any, int]] = None
        self._mods: Optional[Set[int]] = None  # ids of the modules armed (trace.modules)

    def __enter__(self) -> Recorder:
        opts = self.opts
        if not self.isolated:  # before the recording: cache_info() is not the step's code
            self._hits = memo.hits()
        rec = _Recording(opts, _CURRENT.get(), self.isolated)
        self._rec = rec
        if opts.track_reads:
            hooks.install()
            if not self.isolated:  # a step, not an import: imports stat through importlib's own
                (_PROBES or _probes()).wrap()
            (_NATIVE or _native()).wrap()
        if opts.track_env:
            hooks.wrap_env()
        with _LOCK:
            _ACTIVE.append(rec)
            _cwd[0] = None
        self._token = _CURRENT.set(rec)
        self._t0 = time.time_ns()
        if opts.track_reads and not self.isolated:
            from zenbuild.trace import modules

            self._mods = modules.arm(rec, _target)
        if opts.trace_calls:
            calls = _CALLS or _load_calls()  # imported once a step is recorded
            self._calls = calls.CallTracer(rec, _target, _ACTIVE.__len__)
            self._calls.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        rec = self._rec
        assert rec is not None
        calls: List[List[Any]] = []
        traced = False
        try:
            if self._calls is not None:
                traced = self._calls.stop()
                if traced:
                    calls = (_CALLS or _load_calls()).project_calls(rec.codes, rec.root,
                                                                     rec.excluded)
        finally:
            if self._mods is not None:
                from zenbuild.trace import modules

                modules.disarm(rec, self._mods)
            _CURRENT.reset(self._token)
            with _LOCK:
                if rec in _ACTIVE:
                    _ACTIVE.remove(rec)
            if self.opts.track_env:
                hooks.unwrap_env()
            if self.opts.track_reads and not self.isolated:
                _PROBES.unwrap()
            if self.opts.track_reads:
                _NATIVE.unwrap()
        t0 = self._t0
        if not self.isolated:
            t0 = memo.add_remembered(rec, traced, self._hits, t0, _ORIG_STAT)
        self.trace = rec.finish(t0, calls, traced)
        if traced and any(_SUBCLASSES in c.co_names or _SUBCLASSES in c.co_consts
                          for c in rec.codes):  # Base.__subclasses__() in code that ran
            from zenbuild.trace import subclasses

            try:
                self.trace.subclasses = subclasses.found(rec.codes, rec.root, rec.excluded,
                                                         self._mods)
            except Exception:  # noqa: BLE001 - never the step's failure: its run is not cached
                self.trace.calls_displaced = True
        if self._calls is not None and self._calls.displaced:
            self.trace.calls_displaced = True


def recording_imports(root: str, store_dir: str = "", track_env: bool = True) -> Recorder:
    """A recorder for a block that imports project modules (files a module reads at import
    time, such as ``yaml.safe_load(open("params.yaml"))`` in config.py, belong to its
    fingerprint): same filters, no call tracing, no declared outputs. Isolated: a module
    imported inside this block records into its own recording only (nested imports attribute
    reads to the innermost module being executed); a step recording around it still sees them."""
    return Recorder(TraceOptions(root, store_dir, (), True, track_env, False, ()), isolated=True)


# The parts of the recorder every recording uses (an import's too: a no-op run records the
# pipeline module's import), imported last: they take the names above from this module.
from zenbuild.trace import hooks  # noqa: E402
from zenbuild.trace.hooks import _QUIET as _QUIET  # noqa: E402  (the tests look at it)
from zenbuild.trace.hooks import listing_digest as listing_digest  # noqa: E402
