"""Materializers: how a type is saved, loaded and digested, as entries of the one registry the
canonical pickler consults (pickler.REDUCERS, filled by register_value_type). Built in:
plain data and numpy arrays (the canonical encoding), pandas frames and series and pyarrow
tables (their protocol-5 pickles, whose buffers are kept out of band and mapped back in
place), polars frames and series (as pyarrow tables, registered once polars is imported: see
"polars" below). ``value_type`` lets a class that saves itself to a folder be a value: the
folder's files (sorted by path) are the value's bytes, and so its digest. ``registration``
tells the code fingerprint what is registered for a class: that code is part of the class's."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar, Union

from zenbuild.serialize import register_value_type

T = TypeVar("T", bound=type)

# Libraries whose types are registered only once the library is imported, so that a run not
# using it never imports it: top-level module name -> a function registering its types
# (polars, below). The canonical pickler calls register_lazy before every dump.
LAZY: Dict[str, Callable[[], None]] = {}


def register_lazy() -> None:
    """Register the types of every library in LAZY that is imported by now."""
    for name in [n for n in LAZY if n in sys.modules]:
        register = LAZY.get(name)
        if register is not None:
            register()  # idempotent: two threads may both call it; neither dumps before
            LAZY.pop(name, None)


_folders: List[str] = []  # folders made for loads in this process, removed at exit


def _cleanup() -> None:
    import shutil  # here: tempfile and shutil (random, bz2, lzma) cost every run ~10 ms

    for d in _folders:
        shutil.rmtree(d, ignore_errors=True)


def _folder_files(folder: str, owner: str = "save()") -> Tuple[Tuple[Any, ...], ...]:
    """(relative posix path, executable, PickleBuffer of its bytes) of every file, sorted; an
    empty folder as (its path + "/", False, b""), a link to a folder inside ``folder`` as
    (its path, False, b"", target text): a checkpoint layout's ``latest -> checkpoint-3``
    (a link to a file counts as that file). Anything else there (a fifo, which an open()
    would wait on forever, a socket, a device, a dangling link, a link to a folder outside
    ``folder``) is refused: ValueError, naming ``owner``."""
    import pickle  # not at import: a run that stores no value type never pickles
    import stat

    out: List[Tuple[Any, ...]] = []
    real_top = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        here = os.path.relpath(dirpath, folder).replace(os.sep, "/")
        if dirpath != folder and not dirnames and not filenames:
            out.append((here + "/", False, pickle.PickleBuffer(b"")))
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                continue
            dirnames.remove(name)  # (os.walk does not go in: it is kept as the link)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            target = os.readlink(full)
            real = os.path.realpath(full)
            if os.path.isabs(target) or not (real == real_top
                                             or real.startswith(real_top + os.sep)):
                raise ValueError(f"{owner} left {rel} in its folder, a link to {target!r}, "
                                 "outside that folder: a value is what its folder holds")
            out.append((rel, False, pickle.PickleBuffer(b""), target))
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            try:
                st = os.stat(full)
            except OSError as e:
                raise ValueError(f"{owner} left {rel} in its folder, which cannot be read "
                                 f"({e.strerror or e}): a value is the files it writes") from None
            if not stat.S_ISREG(st.st_mode):
                what = ("a fifo" if stat.S_ISFIFO(st.st_mode) else "a socket"
                        if stat.S_ISSOCK(st.st_mode) else "a device")
                raise ValueError(f"{owner} left {rel} in its folder, which is {what}, not a "
                                 "file: a value is the regular files it writes")
            with open(full, "rb") as f:
                data = f.read()
            out.append((rel, bool(st.st_mode & 0o111), pickle.PickleBuffer(data)))
    out.sort(key=lambda x: x[0])
    return tuple(out)


def from_folder(cls: type, load: str, files: Tuple[Tuple[Any, ...], ...]) -> Any:
    """Rebuild a @value_type value: write its files to a new folder (kept until this process
    exits, so a lazy loader may read them later) and call ``cls.<load>(folder)``. A stable
    name: stored values refer to it."""
    if not _folders:
        atexit.register(_cleanup)
    import tempfile

    folder = tempfile.mkdtemp(prefix="zenbuild-value-")
    _folders.append(folder)
    for entry in files:
        rel, executable, data = entry[0], entry[1], entry[2]
        parts = rel.rstrip("/").split("/")
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"a stored {cls.__qualname__} names {rel!r}, not a path inside "
                             "its folder")
        full = os.path.join(folder, *parts)
        if rel.endswith("/"):  # an empty folder
            os.makedirs(full, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if len(entry) > 3:  # a link to a folder inside it
            target = str(entry[3])
            if os.path.isabs(target) or os.path.normpath(
                    os.path.join(os.path.dirname(rel), target)).startswith(".."):
                raise ValueError(f"a stored {cls.__qualname__} links {rel!r} out of its folder")
            os.symlink(target, full)
            continue
        with open(full, "wb") as f:
            f.write(memoryview(data))
        if executable:
            os.chmod(full, 0o755)
    return getattr(cls, load)(Path(folder))


class _FolderReducer:
    """The reducer @value_type registers: ``obj.<save>(folder)``'s files, loaded back by
    ``from_folder`` calling ``cls.<load>``. A class, so that ``registration`` can tell
    which methods it calls."""

    def __init__(self, save: str, load: str) -> None:
        self.save = save
        self.load = load

    def __call__(self, obj: Any) -> Any:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="zenbuild-save-") as folder:
            getattr(obj, self.save)(Path(folder))
            files = _folder_files(folder, f"{type(obj).__qualname__}.{self.save}()")
        return (from_folder, (type(obj), self.load, files))


def value_type(cls: Optional[T] = None, *, save: str = "save",
               load: str = "load") -> Union[T, Callable[[T], T]]:
    """Class decorator: instances are stored by ``obj.save(folder)`` (it writes files into
    an empty folder) and loaded by ``cls.load(folder)`` (a classmethod or staticmethod).
    The value's digest is that of its files' paths and bytes, so a model that writes the
    same files has the same digest in every process (and its consumers stay cached), and
    the class's code is part of it as for any project class. ``save`` and ``load`` name
    other methods. Subclasses are stored the same way, each loaded by its own class."""

    def register(c: T) -> T:
        from zenbuild.errors import MisuseError

        if not isinstance(c, type):
            raise MisuseError(f"@value_type decorates a class, not {type(c).__name__}")
        for name in (save, load):
            if not callable(getattr(c, name, None)):
                raise MisuseError(f"@value_type: class {c.__qualname__} has no method {name}(); "
                                  f"define it, or name yours with @value_type({name}=...)")
        register_value_type(c, _FolderReducer(save, load))
        return c

    if cls is None:
        return register
    return register(cls)


# ---- what is registered for a type, for the code fingerprint ------------------------------


class Registration(NamedTuple):
    """The registration the canonical pickler uses for a class's instances: ``on`` is the
    class of its MRO the reducer was registered for, ``reduce`` the reducer; ``save`` and
    ``load`` name the methods a @value_type registration calls ("" otherwise)."""

    on: type
    reduce: Callable[[Any], Any]
    save: str = ""
    load: str = ""


def registration(cls: type) -> Optional[Registration]:
    """What stores instances of ``cls``: the first registration along its MRO, as the
    canonical pickler finds it (pickler.REDUCERS), or None. The code it names is part of the
    class's code in fingerprints (fingerprint/code.py), so an edit of a reducer, or of the
    function its result names to rebuild the value, reruns the steps using the class.
    Library registrations not made yet (LAZY) are not made here, and pickler is not
    imported: a process that registered nothing has not imported it."""
    pickler = sys.modules.get("zenbuild.serialize.pickler")
    reducers: Dict[type, Callable[[Any], Any]] = getattr(pickler, "REDUCERS", None) or {}
    if not reducers:
        return None
    for base in getattr(cls, "__mro__", ()):
        fn = reducers.get(base)
        if fn is not None:
            if isinstance(fn, _FolderReducer):
                return Registration(base, fn, fn.save, fn.load)
            return Registration(base, fn)
    return None


# ---- polars ---------------------------------------------------------------------------------
# polars pickles a frame as one in-band bytes object (its IPC serialization): a full copy to
# store, another to load, nothing mapped. A DataFrame or Series is stored instead as the
# pyarrow Table of its columns, rechunked (``to_arrow()``: no copy of numeric columns), whose
# protocol-5 pickle keeps every Arrow buffer out of band; a load maps them and
# ``pl.from_arrow`` takes numeric columns without a copy. Measured (2M rows x 10 columns,
# benchmarks/bench_values.py, 2-core VM): store 0.14-0.4 s vs 0.8-1.1 s by polars' pickle,
# load 0.07-0.1 s vs 0.5-0.7 s.
#
# What "equal" means for the digest: the digest is that of the Arrow layout of the rechunked
# frame: column names, polars dtypes (Arrow types and polars' field metadata: Enum categories,
# time zones, decimal scale), validity bitmaps and value buffers. The same frame built by
# the same code gives the same digest in every process (tests/unit/test_polars.py), whatever
# its chunks (a chunked frame is rechunked: one copy, while it is stored, made once for both
# pickles of the stability check). Two frames that are equal but laid out differently may
# give different digests (a slice's offset, the values hidden under nulls, unused bits of a
# validity bitmap): that costs a rerun of their consumers, never a wrong value. Frames that
# differ never share a digest, as the Arrow layout holds all of the content; dtypes whose
# Arrow export does not come back the same (Object, Int128, UInt128, Float16 and whatever a
# later polars adds) keep polars' own pickle, as do subclasses and zero-width frames (whose
# height Arrow would lose).

_ARROW_DTYPES = frozenset({
    "Boolean", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
    "Float32", "Float64", "String", "Binary", "Date", "Datetime", "Duration", "Time",
    "Decimal", "Categorical", "Enum", "Null", "List", "Array", "Struct",
})


def _arrow_safe(dtype: Any) -> bool:
    """Whether a polars dtype comes back the same from its Arrow export."""
    name = dtype.base_type().__name__
    if name not in _ARROW_DTYPES:
        return False
    if name in ("List", "Array"):
        return _arrow_safe(dtype.inner)
    if name == "Struct":
        return all(_arrow_safe(f.dtype) for f in dtype.fields)
    return True


# The Table of the last frame stored, for the second pickle of that same frame (the stability
# check of buffers.encode_value pickles every value twice and compares): without it, a chunked
# frame would be rechunked, a copy of all of it, twice, and string columns converted twice.
# At most one entry: a weak reference to the frame or series, the thread, what the frame is
# made of (column names, dtypes, the addresses of its own buffers), their zero-copy Arrow
# export, which keeps those buffers alive so that no other buffer can take their addresses,
# and the Table. The second pickle takes it; it is dropped with the frame. A frame changed in
# place in between has other buffers (polars copies a shared buffer before writing to it).
_last_table: List[Tuple[Any, int, Tuple[Any, ...], Any, Any]] = []


def _forget(ref: Any) -> None:
    for entry in list(_last_table):
        if entry[0] is ref:
            _last_table.remove(entry)


def _made_of(df: Any) -> Tuple[Tuple[Any, ...], Any]:
    """(names, dtypes and buffers of ``df``, the export holding those buffers). A buffer is
    told by its address; a categorical's codes and dictionary, which the export makes anew,
    by their bytes. A buffer of a nested categorical has a new address every time: that
    frame is rechunked for each pickle (slower, never wrong)."""
    import polars as pl
    import xxhash

    native = df.to_arrow(compat_level=pl.CompatLevel.newest())  # no copy, but categoricals
    where: List[Any] = [tuple(df.columns), str(df.schema)]
    for col in native.columns:
        for chunk in col.chunks:
            if hasattr(chunk, "indices"):
                bufs = chunk.indices.buffers() + chunk.dictionary.buffers()
                where.extend(xxhash.xxh3_64_intdigest(b) if b is not None else 0 for b in bufs)
            else:
                where.extend(b.address if b is not None else 0 for b in chunk.buffers())
    return tuple(where), native


def _polars_table(df: Any, owner: Any) -> Any:
    """The frame's pyarrow Table (rechunked), or None when it must keep polars' pickle.
    ``owner`` is the value being stored (the frame, or the series ``df`` was made from)."""
    if df.width == 0 or not all(_arrow_safe(t) for t in df.schema.values()):
        return None
    try:
        import pyarrow  # noqa: F401  (to_arrow needs it)
    except ImportError:
        return None
    import threading
    import weakref

    where, native = _made_of(df)
    thread = threading.get_ident()
    try:
        ref, by, was, _, table = _last_table.pop()
    except IndexError:
        pass
    else:  # the first pickle's Table when this is the second pickle of the same frame
        if ref() is owner and by == thread and was == where:
            return table
    if max(df.n_chunks("all")) > 1:
        df = df.rechunk()
    table = df.to_arrow()  # no copy of numeric columns; strings as large_string
    _last_table[:] = [(weakref.ref(owner, _forget), thread, where, native, table)]
    return table


def polars_frame_from_arrow(table: Any) -> Any:
    """Rebuild a polars DataFrame stored as a pyarrow Table (a stable name: stored values
    refer to it). Numeric columns stay in the table's (mapped) buffers."""
    import polars as pl

    return pl.from_arrow(table, rechunk=False)


def polars_series_from_arrow(table: Any, name: str) -> Any:
    """Rebuild a polars Series stored as a one-column pyarrow Table and its name (a stable
    name; the name is apart because a frame's column cannot be named "")."""
    return polars_frame_from_arrow(table).to_series().alias(name)


def _register_polars() -> None:
    import polars as pl

    def frame(df: Any) -> Any:
        table = _polars_table(df, df) if type(df) is pl.DataFrame else None
        return NotImplemented if table is None else (polars_frame_from_arrow, (table,))

    def series(s: Any) -> Any:
        table = _polars_table(s.to_frame(), s) if type(s) is pl.Series else None
        return NotImplemented if table is None else (polars_series_from_arrow, (table, s.name))

    register_value_type(pl.DataFrame, frame)
    register_value_type(pl.Series, series)


LAZY["polars"] = _register_polars


# ---- pandas columns backed by Arrow ------------------------------------------------------
# pandas pickles an Arrow-backed column (the "string" dtype, ArrowDtype) by combine_chunks():
# a new copy of its buffers at every pickle, so the two pickles of the stability check made
# two copies and compared them byte by byte (a 2M-row string column: ~11 ms of a 70 ms store).
# A column of one unsliced chunk is pickled with the same state holding that chunk itself:
# the same buffers every time, out of band, so the check compares addresses only. Anything
# else (more chunks, a slice of a bigger array, a class with its own pickling) is left to
# pandas.


def _register_pandas_arrow() -> None:
    import copyreg

    try:
        from pandas.core.arrays.arrow.array import ArrowExtensionArray
    except ImportError:  # a pandas without Arrow-backed arrays
        return
    own = ArrowExtensionArray.__getstate__

    def column(arr: Any) -> Any:
        t = type(arr)
        data = arr.__dict__.get("_pa_array")
        if (t.__getstate__ is not own or t.__reduce_ex__ is not object.__reduce_ex__
                or t.__reduce__ is not object.__reduce__
                or getattr(data, "num_chunks", 0) != 1):
            return NotImplemented
        chunk = data.chunk(0)
        # a slice (df.head(10) too, which starts at 0) holds its parent's whole buffers, and a
        # pickle of it would store them all: pandas' combine_chunks() compacts it
        if chunk.offset != 0 or chunk.get_total_buffer_size() > chunk.nbytes + max(
                256, chunk.nbytes // 100):
            return NotImplemented
        state = arr.__dict__.copy()
        state["_pa_array"] = chunk
        state["_cache"] = {}  # as pandas: cached properties are recomputed
        return (copyreg.__newobj__, (t,), state)  # type: ignore[attr-defined]

    register_value_type(ArrowExtensionArray, column)


LAZY["pandas"] = _register_pandas_arrow
