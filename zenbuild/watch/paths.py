"""What `zenbuild watch` watches and which file events matter: path rules, no I/O but stat and,
for an event in a folder a step listed, that listing (to see whether it still is the one the
step's entry recorded)."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from zenbuild.paths import glob_match as dir_glob_match  # the core's own Dir glob semantics
from zenbuild.paths import inside

# Folders whose contents never trigger a rebuild (unless the pipeline declares a file inside).
NEVER_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".tox", ".nox", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".ipynb_checkpoints",
    "site-packages", "dist-packages",
})
# Editor swap, backup and atomic-save temp files (vim, emacs, JetBrains, VS Code, zenbuild).
_EDITOR_GLOBS = (
    ".*.sw?", "*.sw?", "*~", ".#*", "#*#", "4913", "*.tmp", "*.bak", "*.orig",
    "*___jb_tmp___", "*___jb_old___", "*.crswap", "*.zenbuild-tmp", ".~lock.*#",
)
_EDITOR_RE = re.compile("|".join(fnmatch.translate(g) for g in _EDITOR_GLOBS))
CONFIG_FILES = ("zenbuild.toml", "pyproject.toml")


def is_editor_file(name: str) -> bool:
    """True for swap, backup and temp files editors write next to the file being saved."""
    return _EDITOR_RE.match(name) is not None




class IgnoreRules:
    """A small subset of .gitignore semantics over project-relative posix paths: ``#`` comments,
    ``!`` negation (last match wins), a trailing ``/`` for folders only, a pattern with a ``/``
    anchored at the root, one without matching any path component."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.rules: List[Tuple[re.Pattern[str], bool, bool, bool]] = []
        for raw in patterns:
            self.add(raw)

    def add(self, raw: str) -> None:
        pat = raw.rstrip("\n").rstrip()
        if not pat or pat.startswith("#"):
            return
        negate = pat.startswith("!")
        if negate:
            pat = pat[1:]
        if pat.startswith("\\"):
            pat = pat[1:]
        dir_only = pat.endswith("/")
        pat = pat.strip("/") if dir_only else pat
        anchored = "/" in pat.rstrip("/")
        pat = pat.lstrip("/")
        if not pat:
            return
        self.rules.append((re.compile(glob_regex(pat)), negate, dir_only, anchored))

    @classmethod
    def from_file(cls, path: str) -> IgnoreRules:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls(f.read().splitlines())
        except OSError:
            return cls()

    def match(self, rel: str, is_dir: bool = False) -> bool:
        """Is the project-relative posix path ``rel`` ignored?"""
        if not self.rules:
            return False
        parts = rel.split("/")
        ignored = False
        for rx, negate, dir_only, anchored in self.rules:
            hit = False
            for i in range(len(parts)):
                last = i == len(parts) - 1
                if dir_only and last and not is_dir:
                    continue
                cand = "/".join(parts[: i + 1]) if anchored else parts[i]
                if rx.match(cand):
                    hit = True
                    break
            if hit:
                ignored = not negate
        return ignored


@dataclass
class Report:
    """What one rebuild child found out: the files the pipeline depends on and what it writes.
    Paths are absolute."""

    root: str
    store: str = ""
    loaded: bool = False  # the pipeline imported and traced
    modules: List[str] = field(default_factory=list)
    files: List[str] = field(default_factory=list)  # File inputs
    dirs: List[Tuple[str, Optional[str]]] = field(default_factory=list)  # Dir inputs, glob
    outputs: List[str] = field(default_factory=list)
    config_source: Optional[str] = None
    # what steps listed: [kind, folder, pattern, opts, digest] ("list" for a listing of every
    # name, else a glob spec of zenbuild.trace.globs), folder project-relative
    listings: List[List[Any]] = field(default_factory=list)


@dataclass
class Verdict:
    relevant: bool
    why: str  # for -v: "input", "module", "config", "output", "ignored by ..."


class WatchSet:
    """The rules for one project: which folders to watch and whether an event path matters.

    Precedence: the store; [watch] ignore patterns; a step's own Output; a declared File input,
    an imported project module or the config file; editor/VCS/cache files; a declared Dir input;
    .gitignore; and, while the pipeline does not load, any other ``.py`` file in a watched folder.
    """

    def __init__(self, root: str, user_ignore: Sequence[str] = (), gitignore: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.store = os.path.join(self.root, ".zenbuild")
        self.user_ignore = IgnoreRules(user_ignore)
        self.gitignore = (
            IgnoreRules.from_file(os.path.join(self.root, ".gitignore")) if gitignore else IgnoreRules()
        )
        self.exact: Dict[str, str] = {os.path.join(self.root, c): "config" for c in CONFIG_FILES}
        self.dirs: Dict[str, Optional[str]] = {}
        self.outputs: Set[str] = set()
        # (real folder, [kind, folder, pattern, opts], digest the step's entry recorded)
        self.listings: List[Tuple[str, List[Any], Optional[str]]] = []
        self.names: Dict[str, str] = {}  # real path outside the root -> the declared name
        self.broad = True  # until a run has loaded the pipeline, any .py change may fix it

    # -- building it from reports -----------------------------------------------------------
    def _abs(self, path: str) -> str:
        return os.path.realpath(os.path.join(self.root, path))

    def update(self, report: Report) -> None:
        """Take in a child's report. A run that loaded the pipeline replaces the set; one that
        failed to load only adds to it, so nothing watched before is lost while it is broken."""
        if report.store:
            self.store = self._abs(report.store)
        fresh: Dict[str, str] = {os.path.join(self.root, c): "config" for c in CONFIG_FILES}
        if report.config_source:
            fresh[self._abs(report.config_source)] = "config"
        for m in report.modules:
            fresh[self._abs(m)] = "module"
        for f in report.files:
            fresh[self._abs(f)] = "input"
        dirs = {self._abs(d): g for d, g in report.dirs}
        outputs = {self._abs(o) for o in report.outputs}
        listings = [(self._abs(x[1]), list(x[:4]), x[4]) for x in report.listings
                    if len(x) == 5 and isinstance(x[1], str)]
        for rel in [*report.files, *(d for d, _ in report.dirs), *report.outputs]:
            real = self._abs(rel)
            if not inside(real, self.root):  # a symlink out of the project: show its own name
                self.names[real] = rel
        if report.loaded:
            self.exact, self.dirs, self.outputs, self.broad = fresh, dirs, outputs, False
            self.listings = listings
        else:
            self.exact.update(fresh)
            self.dirs.update(dirs)
            self.outputs |= outputs
            self.listings += [x for x in listings if x not in self.listings]
            self.broad = True

    # -- deciding -----------------------------------------------------------------------------
    def rel(self, path: str) -> str:
        """The project-relative name to show; for a target of a symlink that leads out of the
        project, the symlink's own name."""
        if not inside(path, self.root):
            for real, name in self.names.items():
                if inside(path, real):
                    return name + path[len(real):].replace(os.sep, "/")
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def classify(self, path: str, is_dir: bool = False) -> Verdict:
        path = os.path.realpath(path)
        if inside(path, self.store):
            return Verdict(False, "the store")
        in_root = inside(path, self.root)
        if not in_root and not any(inside(path, real) for real in self.names):
            if not is_dir and self.exact.get(path) == "module":  # project source outside the
                return Verdict(True, "module")  # root (a shared folder on PYTHONPATH)
            return Verdict(False, "outside the project")
        rel = self.rel(path)
        if self.user_ignore.match(rel, is_dir):
            return Verdict(False, "ignored by [watch] ignore")
        for out in self.outputs:
            if inside(path, out):
                return Verdict(False, "a step's Output")
        kind = self.exact.get(path)
        if kind is not None and not is_dir:
            return Verdict(True, kind)
        parts = rel.split("/")
        if any(p in NEVER_DIRS for p in parts[:-1]) or (is_dir and parts[-1] in NEVER_DIRS):
            return Verdict(False, "a VCS, cache or virtualenv folder")
        if not is_dir and is_editor_file(parts[-1]):
            return Verdict(False, "an editor swap or temp file")
        for d, glob in self.dirs.items():
            if inside(path, d) and path != d:
                inner = os.path.relpath(path, d).replace(os.sep, "/")
                if is_dir or glob is None or dir_glob_match(inner, glob):
                    return Verdict(True, "in a Dir input")
        if self._listing_changed(path):
            return Verdict(True, "changes what a step listed")
        if not in_root:
            return Verdict(False, "outside the project")
        if self.gitignore.match(rel, is_dir):
            return Verdict(False, "ignored by .gitignore")
        if self.broad and not is_dir and path.endswith(".py"):
            return Verdict(True, "a .py file (the pipeline does not load yet)")
        return Verdict(False, "nothing depends on it")

    def _listing_changed(self, path: str) -> bool:
        """Whether ``path`` is in a folder a step listed (or below the folder of a pattern it
        listed) and that listing is no longer the one its entry recorded: a file its pattern
        does not match, or an edit that adds and removes no name, changes nothing."""
        for base, spec, was in self.listings:
            if spec[0] == "list":
                near = path == base or os.path.dirname(path) == base
            else:
                near = inside(path, base)
            if near and listing_digest(self.root, spec, self.store) != was:
                return True
        return False

    def wanted(self) -> List[str]:
        """Every path whose appearance matters (to re-arm watches when a folder is created)."""
        return sorted(set(self.exact) | set(self.dirs) | {b for b, _s, _d in self.listings})

    def folders(self) -> List[Tuple[str, bool]]:
        """(folder, recursive) pairs to watch: the parent folder of every exact path (so atomic
        temp+rename saves are seen), each Dir input recursively, and for a path that does not
        exist yet its nearest existing ancestor."""
        deep = set(self.dirs) | {b for b, spec, _d in self.listings if _recursive(spec)}
        real = {d for d in deep if os.path.isdir(d)}
        real = {d for d in real if not any(d != o and inside(d, o) for o in real)}
        flat: Set[str] = {self.root}
        flat.update(_existing(os.path.dirname(p)) for p in self.exact)
        flat.update(_existing(d) for d in deep if not os.path.isdir(d))
        flat.update(_existing(b) for b, spec, _d in self.listings if not _recursive(spec))
        flat = {d for d in flat if not any(inside(d, r) for r in real)}
        # Folders outside the root appear only through symlinked inputs the pipeline declares.
        return [(d, False) for d in sorted(flat)] + [(d, True) for d in sorted(real)]

    def counts(self) -> Tuple[int, int]:
        """(existing files and Dir inputs depended on, folders watched)."""
        present = [p for p in self.exact if os.path.isfile(p)] + [d for d in self.dirs if os.path.isdir(d)]
        return len(present), len(self.folders())


def listing_digest(root: str, spec: List[Any], store: str) -> Optional[str]:
    """The digest a listing has now, as the run computes it (discovered.Discovery)."""
    from zenbuild.discovered import listing_digest as names_digest
    from zenbuild.trace.globs import digest, skipped

    if spec[0] == "list":
        return names_digest(root, spec[1])
    return digest(root, spec, skipped(root, store))


def _recursive(spec: List[Any]) -> bool:
    """Whether a listing can see below its folder: a pattern with a folder part or ``**``."""
    return spec[0] == "path.rglob" or (spec[0] != "list" and ("/" in spec[2].rstrip("/")
                                                              or "**" in spec[2]))


def _existing(folder: str) -> str:
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def glob_regex(pat: str) -> str:
    """A .gitignore-style glob as a regex over posix paths: ``*`` and ``?`` stay inside one
    path component, ``**/`` spans any number of folders, ``[...]`` is a character class."""
    out: List[str] = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + r"\Z"
