"""Materializers: how a type is saved, loaded and digested, as entries of the one registry the
canonical pickler consults (pickler.REDUCERS, filled by register_value_type). Built in:
plain data and numpy arrays (the canonical encoding), pandas frames and series and pyarrow
tables (their protocol-5 pickles, whose buffers are kept out of band and mapped back in
place), polars frames and series (as pyarrow tables, registered once polars is imported: see
"polars" below). ``value_type`` lets a class that saves itself to a folder be a value: the
folder's files (sorted by path) are the value's bytes, and so its digest."""

from __future__ import annotations

import atexit
import os
import pickle
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union

from zenbuild.serialize import register_value_type
from zenbuild.serialize.pickler import LAZY

T = TypeVar("T", bound=type)

_folders: List[str] = []  # folders made for loads in this process, removed at exit


def _cleanup() -> None:
    import shutil  # here: tempfile and shutil (random, bz2, lzma) cost every run ~10 ms

    for d in _folders:
        shutil.rmtree(d, ignore_errors=True)


def _folder_files(folder: str) -> Tuple[Tuple[str, bool, Any], ...]:
    """(relative posix path, executable, PickleBuffer of its bytes) of every file, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            with open(full, "rb") as f:
                data = f.read()
            out.append((rel, bool(os.stat(full).st_mode & 0o111), pickle.PickleBuffer(data)))
    out.sort(key=lambda x: x[0])
    return tuple(out)


def from_folder(cls: type, load: str, files: Tuple[Tuple[str, bool, Any], ...]) -> Any:
    """Rebuild a @value_type value: write its files to a new folder (kept until this process
    exits, so a lazy loader may read them later) and call ``cls.<load>(folder)``. A stable
    name: stored values refer to it."""
    if not _folders:
        atexit.register(_cleanup)
    import tempfile

    folder = tempfile.mkdtemp(prefix="zenbuild-value-")
    _folders.append(folder)
    for rel, executable, data in files:
        full = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(memoryview(data))
        if executable:
            os.chmod(full, 0o755)
    return getattr(cls, load)(Path(folder))


def _folder_reducer(save: str, load: str) -> Callable[[Any], Any]:
    def reduce(obj: Any) -> Any:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="zenbuild-save-") as folder:
            getattr(obj, save)(Path(folder))
            files = _folder_files(folder)
        return (from_folder, (type(obj), load, files))

    return reduce


def value_type(cls: Optional[T] = None, *, save: str = "save",
               load: str = "load") -> Union[T, Callable[[T], T]]:
    """Class decorator: instances are stored by ``obj.save(folder)`` (it writes files into
    an empty folder) and loaded by ``cls.load(folder)`` (a classmethod or staticmethod).
    The value's digest is that of its files' paths and bytes, so a model that writes the
    same files has the same digest in every process (and its consumers stay cached), and
    the class's code is part of it as for any project class. ``save`` and ``load`` name
    other methods. Subclasses are stored the same way, each loaded by its own class."""

    def register(c: T) -> T:
        if not isinstance(c, type):
            raise TypeError("@value_type decorates a class")
        for name in (save, load):
            if not callable(getattr(c, name, None)):
                raise TypeError(f"@value_type: class {c.__qualname__} has no method {name}()")
        register_value_type(c, _folder_reducer(save, load))
        return c

    if cls is None:
        return register
    return register(cls)


# ---- polars ---------------------------------------------------------------------------------
# polars pickles a frame as one in-band bytes object (its IPC serialization): a full copy to
# store, another to load, nothing mapped. A DataFrame or Series is stored instead as the
# pyarrow Table of its columns, rechunked (``to_arrow()``: no copy of numeric columns), whose
# protocol-5 pickle keeps every Arrow buffer out of band; a load maps them and
# ``pl.from_arrow`` takes numeric columns without a copy. Measured (2M rows x 10 columns,
# benchmarks/bench_values.py): store 0.4 s vs 1.1 s by polars' pickle, load 0.1 s vs 0.5 s.
#
# What "equal" means for the digest: the digest is that of the Arrow layout of the rechunked
# frame: column names, polars dtypes (Arrow types and polars' field metadata: Enum categories,
# time zones, decimal scale), validity bitmaps and value buffers. The same frame built by
# the same code gives the same digest in every process (tests/unit/test_polars.py), whatever
# its chunks (a chunked frame is rechunked: one copy, while it is stored). Two frames that
# are equal but laid out differently may give different digests (a slice's offset, the
# values hidden under nulls, unused bits of a validity bitmap, the order of a categorical's
# dictionary): that costs a rerun of their consumers, never a wrong value. Frames that
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


def _polars_table(df: Any) -> Any:
    """The frame's pyarrow Table (rechunked), or None when it must keep polars' pickle."""
    if df.width == 0 or not all(_arrow_safe(t) for t in df.schema.values()):
        return None
    try:
        import pyarrow  # noqa: F401  (to_arrow needs it)
    except ImportError:
        return None
    if max(df.n_chunks("all")) > 1:
        df = df.rechunk()
    return df.to_arrow()


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
        table = _polars_table(df) if type(df) is pl.DataFrame else None
        return NotImplemented if table is None else (polars_frame_from_arrow, (table,))

    def series(s: Any) -> Any:
        table = _polars_table(s.to_frame()) if type(s) is pl.Series else None
        return NotImplemented if table is None else (polars_series_from_arrow, (table, s.name))

    register_value_type(pl.DataFrame, frame)
    register_value_type(pl.Series, series)


LAZY["polars"] = _register_polars
