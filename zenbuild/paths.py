"""Project paths, written once: normalizing a user's path to project-relative posix form,
inside-root checks, Dir listing with its glob, the folders no scan enters, and which code is
zenbuild's, the interpreter's or a notebook cell's rather than the project's."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

from zenbuild.errors import PathError

# Folders of installed or generated code: never project sources, never Dir contents.
SKIP_DIRS = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox")
# Folders a Dir listing never enters.
DIR_SKIP = ("__pycache__", ".git")
# zenbuild's own package folder (its code is never the project's, its frames never the user's)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def library_dirs() -> Tuple[str, ...]:
    """The standard library and the site-packages folders, as given and resolved: code there
    is the interpreter's or an installed distribution's. (sysconfig would say the same, at ~3 ms
    of import on every run; site is imported at start-up anyway.)"""
    import site

    dirs = {os.path.dirname(os.__file__)}
    dirs.update(p for p in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
                if p and ("site-packages" in p or "dist-packages" in p))
    return tuple(sorted({f(d) for d in dirs for f in (os.path.abspath, os.path.realpath)}))


def shown(path: str, root: str) -> str:
    """How a file is named to the user and in keys: project-relative posix inside ``root``,
    else the path as given (a relative ``path`` is taken as already project-relative)."""
    if not os.path.isabs(path):
        return path
    rel = os.path.relpath(path, root)
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def interactive_file(filename: str) -> bool:
    """True for the pseudo-file of code typed into an interactive session (a notebook cell):
    linecache holds its lines although no such file exists. linecache is never imported just
    to look (no cells without it: IPython imports it)."""
    if filename.startswith("<frozen "):  # importlib's own bootstrap code, never a cell
        return False
    linecache: Any = sys.modules.get("linecache")
    cache = getattr(linecache, "cache", None)  # None too while linecache is being imported:
    if cache is None:  # then no cell is in it yet (Python 3.12's call tracing sees imports)
        return False
    if filename in cache and not os.path.exists(filename):
        return True
    ip_cache: Any = getattr(linecache, "_ipython_cache", None)
    return bool(ip_cache) and filename in ip_cache and not os.path.exists(filename)


def plain_rel(path: str) -> Optional[str]:
    """``path`` itself (minus a leading ./ and trailing /) when it is already a plain
    project-relative posix path, else None."""
    if path and path[0] != "/" and ".." not in path and "\\" not in path and "//" not in path:
        rel = path[2:] if path.startswith("./") else path
        rel = rel.rstrip("/")
        if rel and "/./" not in rel and not rel.endswith("/.") and rel != ".":
            return rel
    return None


def normalize_path(root: str, path: str, what: str) -> str:
    """Project-relative posix form of ``path``; refuses paths that escape the root."""
    if not path:
        raise PathError(f"{what}: empty path")
    rel = plain_rel(path)
    if rel is not None:
        return rel
    full = os.path.normpath(os.path.join(root, path))
    rel = os.path.relpath(full, root)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise PathError(
            f"{what} {path!r} is outside the project root {root}. "
            "Paths are relative to the project root; copy the file into the project "
            "or move the project root (zenbuild.toml) up."
        )
    return Path(rel).as_posix()


def storable(text: str) -> str:
    """``text`` as text SQLite (UTF-8) can hold: a file name that is not UTF-8 reaches Python
    with its bytes as surrogate escapes ('caf\\udce9.csv'), which is shown as those bytes,
    ``caf\\xe9.csv``, the rest unchanged. For text a person reads (a run's log); a path
    zenbuild looks up again is stored losslessly instead (JSON keeps '\\udce9')."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name gives (U+D800...): as its escape
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parents(path: str) -> List[str]:
    """The path itself and every folder above it: a/b/c -> [a/b/c, a/b, a]."""
    out = [path]
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        out.append(path)
    return out


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both in the same form, no trailing /)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class MissingInput(Exception):
    """A declared File/Dir input does not exist."""


def dir_files(root: str, path: str, pattern: Optional[str],
              shape: Optional[List[str]] = None) -> List[str]:
    """Project-relative paths of the files a Dir input ``path`` with ``pattern`` covers, sorted.
    A symlink to a file counts as a file (its content is read through it); a symlink to a
    folder is not entered, and a dangling symlink or a fifo, socket or device is no file.
    With ``shape``, what the folder holds besides its files' bytes is appended to it, one
    line each (inner path, NUL, what): each symlink's target text, each empty folder, each
    folder whose mode is not 0755, each special file (the caller adds file modes)."""
    base = os.path.join(root, path)
    if not os.path.isdir(base):
        if os.path.lexists(base):  # Dir("data.csv"): a file, not a folder
            raise MissingInput(f"input {path!r} is a file, not a folder; declare it with "
                               f"File({path!r})")
        raise MissingInput(f"input folder {path!r} does not exist")
    pattern = pattern or "**/*"
    prefix = "" if path == "." else path + "/"
    found: List[str] = []
    todo = [("", base)]
    while todo:
        relbase, dirpath = todo.pop()
        try:
            entries = list(os.scandir(dirpath))
        except OSError:
            continue  # what os.walk does with a folder it cannot list
        if shape is not None and relbase and not entries and glob_match(relbase[:-1], pattern):
            shape.append(f"{relbase[:-1]}\0empty")
        for e in entries:
            name = e.name
            rel = relbase + name
            if e.is_symlink():
                if shape is not None and glob_match(rel, pattern):
                    shape.append(f"{rel}\0link {os.readlink(e.path)}")
                try:
                    st = os.stat(e.path)
                except OSError:
                    continue  # dangling: no content
                if not stat.S_ISREG(st.st_mode):
                    continue  # a link to a folder is not entered (as os.walk)
            elif e.is_dir(follow_symlinks=False):
                if name not in DIR_SKIP:
                    todo.append((rel + "/", e.path))
                    if shape is not None and glob_match(rel, pattern):
                        mode = stat.S_IMODE(e.stat(follow_symlinks=False).st_mode)
                        if mode != 0o755:
                            shape.append(f"{rel}\0mode {mode:o}")
                continue
            elif not e.is_file(follow_symlinks=False):
                if shape is not None and glob_match(rel, pattern):
                    shape.append(f"{rel}\0special")
                continue
            if ".zenbuild-tmp-" in name:  # a restore's temp file (store/outputs.py): not content
                continue
            if glob_match(rel, pattern):
                found.append(prefix + rel)
    return sorted(found)


def glob_match(rel: str, pattern: str) -> bool:
    """Dir glob semantics: ``**/`` matches any depth (including none); a pattern without /
    matches top-level names only."""
    import fnmatch

    if pattern.startswith("**/"):
        return fnmatch.fnmatchcase(rel, pattern[3:]) or fnmatch.fnmatchcase(rel, pattern)
    if "/" not in pattern:
        return "/" not in rel and fnmatch.fnmatchcase(rel, pattern)
    return fnmatch.fnmatchcase(rel, pattern)


class PathMaker:
    """``Path(root + "/" + rel)`` for the many project-relative paths a run hands to steps,
    without re-parsing the root each time: Path() costs ~10-20 us a call (it splits and
    re-joins every component), a step of the synthetic benchmark gets six of them. On CPython
    <= 3.11 the Path is built from the root's parsed parts plus ``rel``'s (pathlib's own
    ``_from_parsed_parts``); a ``rel`` that needs normalizing, another Python, or a first
    result that differs from Path()'s falls back to Path()."""

    def __init__(self, root: str) -> None:
        self.prefix = root.rstrip("/") + "/"
        base = Path(self.prefix)
        make = getattr(type(base), "_from_parsed_parts", None)
        self._make: Any = None
        if sys.version_info < (3, 12) and make is not None and os.sep == "/":
            drv, rt, parts = base._drv, base._root, list(base._parts)  # type: ignore[attr-defined]
            self._make = lambda rel: make(drv, rt, parts + rel.split("/"))
            probe = "a/b.txt"
            try:
                got = self._make(probe)
                ok = got == Path(self.prefix + probe) and str(got) == self.prefix + probe
            except Exception:  # pragma: no cover - pathlib changed under us
                ok = False
            if not ok:  # pragma: no cover
                self._make = None

    def __call__(self, rel: str) -> Path:
        make = self._make
        if (make is None or not rel or rel == "." or rel[0] in "./" or rel[-1] == "/"
                or "//" in rel or "/." in rel):
            return Path(self.prefix + rel)
        return make(rel)  # type: ignore[no-any-return]
