"""Reads by native code: the paths a step hands to readers that open files outside Python
(pyarrow's C++ file system, polars' Rust readers, SQLite) count as reads, as if the step had
opened them with open(). A file is a read; a folder (a dataset directory) is a listing of it
and of every folder below plus a read of every file inside; a glob (polars) is a listing of the
folders it looks in plus a read of every match; a missing path is a read of a file that is not
there (its appearing reruns the step).

Where (the narrowest Python-level choke points, so that every public entry point is covered,
however the user imported it):
- pyarrow: ``_resolve_filesystem_and_path`` as ``pyarrow.fs``, ``pyarrow.parquet.core`` and
  ``pyarrow.orc`` hold it, counted only when called by a reader (``ParquetFile``,
  ``ParquetDataset``, ``read_table``, ``read_metadata``, ``read_schema``, ``pyarrow.dataset``'s
  single-source path, ``parquet_dataset``, ``orc.read_table``), never by a writer; and ``pyarrow.dataset._ensure_multiple_sources``
  (a dataset of a list of files). pyarrow's csv, json, feather and ipc readers (and
  ``memory_map``, ``OSFile``) check ``os.path.isdir`` on the path first: the os.stat wrapper
  of zenbuild.trace sees those already.
- polars: ``normalize_filepath`` as the read modules of ``polars.io`` hold it (not the
  DataFrame/LazyFrame modules, whose copy serves the writers and sinks).
- sqlite3: the ``sqlite3.connect`` audit event (handled through zenbuild.trace's audit hook).

Only while a recording is active (wrap() on the first, unwrap() when the last ends: nothing is
imported, wrapped or looked at otherwise). A library module imported while a step records is
wrapped when its import finishes: a finder at the front of ``sys.meta_path`` (only then) hands
the watched module names a loader that patches the module after running it. A wrapper calls
the original with the same arguments and returns its result untouched; recording never raises.
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import zenbuild.trace as T
from zenbuild.lazyre import LazyPattern

_MAGIC = LazyPattern(r"[*?[]")
_MARK = "__zenbuild_native__"

# -- recording one path -----------------------------------------------------------------------------


def plain(path: Any) -> Optional[str]:
    """The local path a reader was given, as str: a str, bytes or os.PathLike path, or a
    ``file://`` URI; None for anything else (a file-like object, whose open() was seen, or a
    remote URI)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        try:
            path = os.fsdecode(path)
        except (UnicodeDecodeError, TypeError):  # pragma: no cover - an undecodable name
            return None
    if type(path) is not str or not path:
        return None
    if "://" in path:
        if not path.startswith("file://"):
            return None
        from urllib.parse import unquote, urlsplit

        u = urlsplit(path)
        if u.netloc not in ("", "localhost") or not u.path:
            return None
        return unquote(u.path)
    return path


def note(rec: Any, path: Any, frame: Any, globs: bool = False) -> Optional[str]:
    """Record ``path`` (see plain()) as read by the step of ``rec``, when the reader was called
    from user code (``frame``: the reader's Python caller). ``globs``: a missing path with
    glob characters is a pattern (polars). Returns the project path recorded as a file read,
    else None. Never raises."""
    try:
        if rec is None or not rec.opts.track_reads:
            return None
        p = plain(path)
        if p is None:
            return None
        if not p.startswith(os.sep):
            p = os.path.join(os.getcwd(), p)
        p = os.path.normpath(p)
        if not T._from_user(frame):
            return None
        return _note_path(rec, p, globs)
    except Exception:  # pragma: no cover - never break the reader
        return None


def _stat(p: str) -> Optional[os.stat_result]:
    try:
        return T._ORIG_STAT(p)
    except (OSError, ValueError):
        return None


def _read(rec: Any, rel: Optional[str]) -> Optional[str]:
    if rel is not None and rel != "." and not rec.dismissed(rel):
        T._note(rec, "reads", rel)
        return rel
    return None


def _note_path(rec: Any, p: str, globs: bool) -> Optional[str]:
    """Record ``p``; the project path of the file read, None for a folder, glob or nothing."""
    st = _stat(p)
    if st is None and globs and _MAGIC.search(p):
        _note_glob(rec, p)
        return None
    rel = rec.rel(p)
    if rel is None:
        return None
    if st is not None and stat_mod.S_ISDIR(st.st_mode):
        _note_tree(rec, p, rel, files=True)
        return None
    return _read(rec, rel)


def _note_tree(rec: Any, top: str, rel: str, files: bool) -> List[str]:
    """List ``top`` and every folder below it (each a listing); with ``files`` every file in
    them is a read. Returns the folders (absolute)."""
    out: List[str] = []
    seen: Set[Tuple[int, int]] = set()
    stack = [(top, rel)]
    while stack:
        d, r = stack.pop()
        st = _stat(d)
        if st is not None:
            if (st.st_dev, st.st_ino) in seen:
                continue  # a link back up
            seen.add((st.st_dev, st.st_ino))
        if rec.dismissed(r):
            continue  # a declared output folder
        T._note(rec, "listed", r)
        out.append(d)
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            er = rec.rel(e.path)  # None: the store, a skipped folder, outside the root
            if er is None:
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((e.path, er))
            elif files:
                _read(rec, er)
    return out


def _note_glob(rec: Any, pattern: str) -> None:
    """A glob: every folder it looks in is listed (a missing one too), every match read; a
    literal last part after a wildcard folder is a read whether or not it exists."""
    import fnmatch

    parts = pattern.split(os.sep)
    i = next(k for k, part in enumerate(parts) if _MAGIC.search(part))
    dirs = [os.sep.join(parts[:i]) or os.sep]
    rest = parts[i:]
    for k, comp in enumerate(rest):
        last = k == len(rest) - 1
        nxt: List[str] = []
        for d in dirs:
            r = rec.rel(d)
            if r is None:
                continue
            full = os.path.join(d, comp)
            if comp == "**":
                nxt.extend(_note_tree(rec, d, r, files=last))
            elif not _MAGIC.search(comp):
                st = _stat(full)
                if last:
                    if st is None or not stat_mod.S_ISDIR(st.st_mode):
                        _read(rec, rec.rel(full))
                elif st is not None and stat_mod.S_ISDIR(st.st_mode):
                    nxt.append(full)
                else:
                    fr = rec.rel(full)
                    if fr is not None and not rec.dismissed(fr):
                        T._note(rec, "listed", fr)  # missing: its appearing changes this
            else:
                if rec.dismissed(r):
                    continue
                T._note(rec, "listed", r)
                try:
                    with os.scandir(d) as it:
                        entries = [e for e in it if fnmatch.fnmatchcase(e.name, comp)]
                except OSError:
                    continue
                for e in entries:
                    try:
                        is_dir = e.is_dir()
                    except OSError:
                        is_dir = False
                    if is_dir and not last:
                        nxt.append(e.path)
                    elif not is_dir and last:
                        _read(rec, rec.rel(e.path))
        dirs = nxt


# -- sqlite3 ----------------------------------------------------------------------------------------


def sqlite_path(database: Any) -> Optional[str]:
    """The database file of a ``sqlite3.connect`` argument, or None (in memory, a temporary
    database, a URI of another host). ``file:`` URIs are read as SQLite reads them with
    ``uri=True``; their query is dropped."""
    if isinstance(database, os.PathLike):
        database = os.fspath(database)
    if isinstance(database, bytes):
        try:
            database = os.fsdecode(database)
        except (UnicodeDecodeError, TypeError):  # pragma: no cover
            return None
    if type(database) is not str or database in ("", ":memory:"):
        return None
    if not database.startswith("file:"):
        return database
    from urllib.parse import parse_qs, unquote

    body, _, query = database[5:].partition("?")
    body = body.partition("#")[0]
    q = parse_qs(query.partition("#")[0])
    if "memory" in q.get("mode", ()) or "memdb" in q.get("vfs", ()):
        return None
    if body.startswith("//"):
        host, slash, rest = body[2:].partition("/")
        if host not in ("", "localhost"):
            return None
        body = slash + rest
    body = unquote(body)
    return body if body and body != ":memory:" else None


def on_sqlite(rec: Any, args: Tuple[Any, ...], frame: Any) -> None:
    """The ``sqlite3.connect`` audit event: the database file (never its -wal, -shm or -journal
    siblings, which SQLite makes and removes as it goes) is a read, unless the step changed it
    (the recording's finish: then it is the step's write, as a file read and written is)."""
    path = sqlite_path(args[0]) if args else None
    rel = note(rec, path, frame) if path is not None else None
    if rel is not None:  # the recording finds out at its end whether the step wrote to it
        was = _db_state(os.path.join(rec.root, rel))  # before SQLite opens it
        r = rec
        while r is not None and r.opts.track_reads:
            r.databases.setdefault(rel, was)
            r = T._up(r)


def _db_state(full: str) -> Any:
    """What says whether a SQLite database changed: its file's stat, None when missing."""
    st = _stat(full)
    return None if st is None else (st.st_size, st.st_mtime_ns, st.st_ino)


def changed_databases(root: str, databases: Dict[str, Any]) -> List[str]:
    """The databases (``rel -> _db_state at the step's first connect``) the step changed: its
    file's stat differs, or its -wal holds frames (a reader's -wal is empty)."""
    out = []
    for rel, was in databases.items():
        full = os.path.join(root, rel)
        wal = _stat(full + "-wal")
        if _db_state(full) != was or (wal is not None and wal.st_size > 0):
            out.append(rel)
    return out


# -- pyarrow -----------------------------------------------------------------------------------------

# the readers whose call of _resolve_filesystem_and_path is a read (module -> qualnames)
_PA_READERS = {
    "pyarrow.parquet.core": ("ParquetFile.__init__", "ParquetDataset.__init__", "read_table",
                             "read_metadata", "read_schema"),
    "pyarrow.dataset": ("_ensure_single_source", "parquet_dataset"),
    "pyarrow.orc": ("read_table",),
}
_pa_codes: Dict[Tuple[int, ...], Set[Any]] = {}


def _unwrapped(fn: Any) -> Any:
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def _pa_reader_codes() -> Set[Any]:
    mods = [sys.modules.get(m) for m in _PA_READERS]
    key = tuple(id(m) for m in mods)
    got = _pa_codes.get(key)
    if got is None:
        got = set()
        for mod, names in zip(mods, _PA_READERS.values()):
            for name in names if mod is not None else ():
                obj: Any = mod
                for part in name.split("."):
                    obj = getattr(obj, part, None)
                code = getattr(_unwrapped(obj), "__code__", None)
                if code is not None:
                    got.add(code)
        _pa_codes.clear()
        _pa_codes[key] = got
    return got


def _pa_local(fs: Any, path: Any) -> Optional[str]:
    """``path`` as a local path when ``fs`` is pyarrow's local file system (or a sub-tree of
    it), else None."""
    pafs = sys.modules.get("pyarrow.fs")
    if pafs is None or type(path) is not str:
        return None
    local = getattr(pafs, "LocalFileSystem", ())
    if isinstance(fs, local):
        return path
    subtree = getattr(pafs, "SubTreeFileSystem", ())
    if isinstance(fs, subtree) and isinstance(fs.base_fs, local):
        return fs.base_path.rstrip("/") + "/" + path.lstrip("/")
    return None


def _pa_resolve(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _resolve_filesystem_and_path(*args: Any, **kwargs: Any) -> Any:
        out = orig(*args, **kwargs)
        if T._ACTIVE:
            try:
                caller = sys._getframe(1)
                if caller.f_code in _pa_reader_codes():
                    p = _pa_local(*out)
                    if p is not None:
                        note(T._target(), p, caller)
            except Exception:  # pragma: no cover - never break the reader
                pass
        return out

    return _resolve_filesystem_and_path


def _pa_multiple(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _ensure_multiple_sources(paths: Any, filesystem: Any = None, *a: Any, **k: Any) -> Any:
        try:
            out = orig(paths, filesystem, *a, **k)
        except BaseException:
            if T._ACTIVE and filesystem is None:  # pyarrow's local file system: a missing file
                _pa_note_all(None, paths, sys._getframe(1))
            raise
        if T._ACTIVE:
            _pa_note_all(out, None, sys._getframe(1))
        return out

    return _ensure_multiple_sources


def _pa_note_all(out: Any, given: Any, caller: Any) -> None:
    """The files of _ensure_multiple_sources: those it returned with their file system
    (``out``), or those it was given (``given``) when it raised."""
    try:
        rec = T._target()
        if out is not None:
            fs, got = out
            paths = [_pa_local(fs, p) for p in got]
        else:
            paths = list(given) if isinstance(given, (list, tuple)) else []
        for p in paths:
            note(rec, p, caller)
    except Exception:  # pragma: no cover - never break the reader
        pass


# -- polars -----------------------------------------------------------------------------------------


def _pl_normalize(orig: Callable[..., Any]) -> Callable[..., Any]:
    def normalize_filepath(*args: Any, **kwargs: Any) -> Any:
        out = orig(*args, **kwargs)
        if T._ACTIVE:
            note(T._target(), out, sys._getframe(1), globs=True)
        return out

    return normalize_filepath


_POLARS_READERS = ("polars.io._utils", "polars.io.csv.functions", "polars.io.parquet.functions",
                   "polars.io.ipc.functions", "polars.io.ndjson", "polars.io.json.read",
                   "polars.io.avro", "polars.io.lines", "polars.io.spreadsheet.functions")

# module -> [(attribute, make the wrapper of the original)]
TARGETS: Dict[str, List[Tuple[str, Callable[[Any], Callable[..., Any]]]]] = {
    "pyarrow.fs": [("_resolve_filesystem_and_path", _pa_resolve)],
    "pyarrow.parquet.core": [("_resolve_filesystem_and_path", _pa_resolve)],
    "pyarrow.orc": [("_resolve_filesystem_and_path", _pa_resolve)],
    "pyarrow.dataset": [("_ensure_multiple_sources", _pa_multiple)],
    **{m: [("normalize_filepath", _pl_normalize)] for m in _POLARS_READERS},
}

# -- installing and putting back ---------------------------------------------------------------------

_users = [0]
_patches: List[Tuple[Any, str, Any, Any]] = []  # (module, attribute, original, wrapper)


def _patch(name: str) -> None:
    """Wrap the choke points of module ``name`` if it is loaded (under T._LOCK)."""
    mod = sys.modules.get(name)
    if mod is None:
        return
    for attr, make in TARGETS.get(name, ()):
        orig = mod.__dict__.get(attr)
        if orig is None or not callable(orig):
            continue
        if getattr(orig, _MARK, False):  # ours: this module imported the name from a wrapped one
            if not any(m is mod and a == attr for m, a, _o, _w in _patches):
                _patches.append((mod, attr, orig.__wrapped__, orig))  # put back all the same
            continue
        wrapper = _made.get(orig)
        try:
            if wrapper is None:  # made once per original: a step's wrap() only assigns
                wrapper = make(orig)
                wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
                wrapper.__doc__ = getattr(orig, "__doc__", None)
                setattr(wrapper, _MARK, True)
                _made[orig] = wrapper
            setattr(mod, attr, wrapper)
        except Exception:  # pragma: no cover - a module that refuses the attribute
            continue
        _patches.append((mod, attr, orig, wrapper))


_made: Dict[Any, Callable[..., Any]] = {}  # an original -> its wrapper


class _Loader:
    """The loader a watched module gets while a step records: the real one, then the patch.
    The module's ``__loader__`` and ``__spec__.loader`` are the real one again before its code
    runs."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: Any) -> None:
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.loader.exec_module(module)
        with T._LOCK:
            if _users[0] > 0:
                _patch(module.__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)


class _Finder:
    """At the front of sys.meta_path while a recording is active: a watched module about to be
    imported gets _Loader around the loader the other finders give it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in TARGETS:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


_FINDER = _Finder()


def wrap() -> None:
    """A recording starts: on the first, wrap what is loaded and watch imports."""
    with T._LOCK:
        _users[0] += 1
        if _users[0] != 1:
            return
        for name in TARGETS:
            _patch(name)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def unwrap() -> None:
    """A recording ends: after the last, every original is put back."""
    with T._LOCK:
        _users[0] = max(0, _users[0] - 1)
        if _users[0]:
            return
        while _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        while _patches:
            mod, attr, orig, wrapper = _patches.pop()
            if mod.__dict__.get(attr) is wrapper:
                setattr(mod, attr, orig)
