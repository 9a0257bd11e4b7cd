"""Materializers: how a type is saved, loaded and digested, as entries of the one registry the
canonical pickler consults (pickler.REDUCERS, filled by register_value_type). Built in:
plain data and numpy arrays (the canonical encoding), pandas frames and series, pyarrow
tables and polars frames (their protocol-5 pickles, whose buffers are kept out of band and
mapped back in place). ``value_type`` lets a class that saves itself to a folder be a value:
the folder's files (sorted by path) are the value's bytes, and so its digest."""

from __future__ import annotations

import atexit
import os
import pickle
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union

from zenbuild.serialize import register_value_type

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
