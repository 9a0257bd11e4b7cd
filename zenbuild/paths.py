"""Project paths, written once: normalizing a user's path to project-relative posix form,
inside-root checks, Dir listing with its glob, and the folders no scan enters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from zenbuild.errors import PathError

# Folders of installed or generated code: never project sources, never Dir contents.
SKIP_DIRS = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox")
# Folders a Dir listing never enters.
DIR_SKIP = ("__pycache__", ".git")


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




def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both in the same form, no trailing /)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class MissingInput(Exception):
    """A declared File/Dir input does not exist."""


def dir_files(root: str, path: str, pattern: Optional[str]) -> List[str]:
    """Project-relative paths of the files a Dir input ``path`` with ``pattern`` covers, sorted."""
    base = os.path.join(root, path)
    if not os.path.isdir(base):
        raise MissingInput(f"input folder {path!r} does not exist")
    pattern = pattern or "**/*"
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in DIR_SKIP)
        relbase = os.path.relpath(dirpath, base)
        for fn in filenames:
            rel = fn if relbase == "." else os.path.join(relbase, fn).replace(os.sep, "/")
            if glob_match(rel, pattern):
                found.append(f"{path}/{rel}" if path != "." else rel)
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
