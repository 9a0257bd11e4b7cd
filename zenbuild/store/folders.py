"""Folder Outputs as the store keeps them: the manifest (format 2: files with their modes,
empty and non-0755 folders, symbolic links by their target text; format 1, files only, still
read), the walk that captures a folder without following a link, and the checks that keep a
restore inside its folder (no write through a symbolic link, no link out of the folder from an
untrusted remote entry)."""

from __future__ import annotations

import json
import os
import posixpath
import stat
from typing import Any, Dict, List, Optional, Set, Tuple

from zenbuild.records import field, record

TMP_MARK = ".zenbuild-tmp-"  # a restore's temp file (outputs.TMP_MARK): never content
MANIFEST_FORMAT = 2
DIR_MODE = 0o755  # the mode of a folder a manifest does not list
PERMS = 0o777  # the bits kept: set-uid, set-gid and sticky bits are not (a remote entry must
#                not make a set-uid file), nor owners


def plain_mode(executable: bool) -> int:
    """The mode of a file a manifest lists without one (format 1 restored these two only)."""
    return 0o755 if executable else 0o644


class SpecialFile(Exception):
    """An output folder holds something that is not a file, folder or symlink (a fifo, a
    socket, a device): the store cannot keep it. ``args``: (project-relative path, what)."""


def special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "a special file"


@record
class Manifest:
    """A folder Output. ``files``: [inner path, digest, size, executable]; ``modes``: inner
    path -> permission bits, for files whose mode is not plain_mode(executable); ``dirs``:
    inner path -> mode, for every folder that is empty or whose mode is not DIR_MODE;
    ``links``: inner path -> target text. ``exact``: a format-2 manifest, which lists every
    folder and link (so a folder or link on disk it does not list is not the step's); a
    format-1 manifest knows files only, and a restore leaves folders and links as it did.
    ``top``: the mode of the Output folder itself when it is not DIR_MODE (key "mode", so a
    plain folder's manifest is what it always was). None: DIR_MODE, or a manifest written
    before the mode was kept; a restore then leaves the folder's mode as it finds it, and
    makes a missing one as any folder is made (the umask decides)."""

    files: List[List[Any]] = field(default_factory=list)
    modes: Dict[str, int] = field(default_factory=dict)
    dirs: Dict[str, int] = field(default_factory=dict)
    links: Dict[str, str] = field(default_factory=dict)
    exact: bool = True
    top: Optional[int] = None

    def mode(self, inner: str, executable: bool) -> int:
        return self.modes.get(inner, plain_mode(executable))

    def encode(self) -> bytes:
        """Old readers read "files" only (and ignore the rest: they restore the files)."""
        doc: Dict[str, Any] = {"files": self.files, "format": MANIFEST_FORMAT}
        if self.modes:
            doc["modes"] = self.modes
        if self.dirs:
            doc["dirs"] = self.dirs
        if self.links:
            doc["links"] = self.links
        if self.top is not None:
            doc["mode"] = self.top
        return json.dumps(doc, sort_keys=True).encode()

    def all_dirs(self) -> Dict[str, int]:
        """Every folder a restore makes (inner path -> mode): those listed, and the parents of
        every entry."""
        out: Dict[str, int] = {}
        for inner in [f[0] for f in self.files] + list(self.links) + list(self.dirs):
            parent = posixpath.dirname(inner)
            while parent and parent not in out:
                out[parent] = self.dirs.get(parent, DIR_MODE)
                parent = posixpath.dirname(parent)
        for inner, mode in self.dirs.items():
            out[inner] = mode
        return out


def parse(data: bytes) -> Manifest:
    """The manifest in ``data``. Raises ValueError (KeyError, TypeError) when malformed."""
    try:
        doc = json.loads(data)
    except RecursionError:  # a remote's manifest of 100,000 nested "[": malformed too
        raise ValueError("nested too deeply") from None
    files = list(doc["files"])
    exact = doc.get("format") == MANIFEST_FORMAT
    modes = dict(doc.get("modes") or {}) if exact else {}
    dirs = dict(doc.get("dirs") or {}) if exact else {}
    links = dict(doc.get("links") or {}) if exact else {}
    for table in (modes, dirs):
        for k, v in table.items():
            if not isinstance(k, str) or type(v) is not int or not 0 <= v <= PERMS:
                raise ValueError(f"bad mode {v!r} for {k!r}")
    for k, v in links.items():
        if not isinstance(k, str) or not isinstance(v, str) or not v or "\0" in v:
            raise ValueError(f"bad link {k!r}")
    top = doc.get("mode") if exact else None
    if top is not None and (type(top) is not int or not 0 <= top <= PERMS):
        raise ValueError(f"bad folder mode {top!r}")
    return Manifest(files, modes, dirs, links, exact, top)


def untrusted_mask() -> int:
    """The permission bits an entry from a remote without a trusted signature may not set:
    the process umask's, and always the world-writable bit (o+w)."""
    umask = None
    try:
        with open("/proc/self/status", "rb") as f:  # reads it without changing it (Linux)
            for line in f:
                if line.startswith(b"Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if umask is None:  # pragma: no cover - not Linux
        umask = os.umask(0o022)
        os.umask(umask)
    return (umask | 0o002) & PERMS


def masked(m: Manifest, mask: int) -> Optional[Manifest]:
    """``m`` with every mode it gives a file or folder stripped of the bits in ``mask``;
    None when nothing changes (a format-1 manifest gives plain modes only: never)."""
    if not m.exact:
        return None
    modes: Dict[str, int] = {}
    for f in m.files:
        ex = bool(f[3])
        want = m.mode(f[0], ex) & ~mask
        if want != plain_mode(ex):
            modes[f[0]] = want
    listed = {inner: mode & ~mask for inner, mode in m.dirs.items()}
    for inner, mode in m.all_dirs().items():  # a parent it made DIR_MODE
        if mode & ~mask != DIR_MODE and inner not in listed:
            listed[inner] = mode & ~mask
    top = None if m.top is None else m.top & ~mask  # None: made as the umask says
    if (modes, listed, top) == (m.modes, m.dirs, m.top):
        return None
    return Manifest(m.files, modes, listed, m.links, m.exact, top)


@record
class Scan:
    """What is in a folder, never following a link: files (inner path -> lstat), folders
    (inner path -> mode, empty or not), links (inner path -> target text), special files
    (inner path -> what). Temp files of a zenbuild restore are left out (dead ones listed in
    ``leftovers``, as full paths)."""

    files: Dict[str, os.stat_result] = field(default_factory=dict)
    dirs: Dict[str, Tuple[int, bool]] = field(default_factory=dict)
    links: Dict[str, str] = field(default_factory=dict)
    special: Dict[str, str] = field(default_factory=dict)
    leftovers: List[str] = field(default_factory=list)


def scan(base: str, leftover: Any = None) -> Scan:
    """The contents of the real folder ``base`` (see Scan). ``leftover(name)``: whether a
    temp file's process is gone. An unreadable folder raises (capture must not miss files)."""
    out = Scan()
    todo = [("", base)]
    while todo:
        rel, path = todo.pop()
        empty = True
        with os.scandir(path) as entries:
            for e in entries:
                empty = False
                inner = rel + e.name
                if e.is_symlink():
                    out.links[inner] = os.readlink(e.path)
                elif e.is_dir(follow_symlinks=False):
                    todo.append((inner + "/", e.path))
                    out.dirs[inner] = (stat.S_IMODE(e.stat(follow_symlinks=False).st_mode), False)
                elif TMP_MARK in e.name:
                    if leftover is not None and leftover(e.name):
                        out.leftovers.append(e.path)
                else:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        out.files[inner] = st
                    else:
                        out.special[inner] = special_kind(st.st_mode)
        if rel and empty:
            out.dirs[rel[:-1]] = (out.dirs[rel[:-1]][0], True)
    return out


def manifest_dirs(found: Scan) -> Dict[str, int]:
    """The folders a manifest lists: the empty ones and those whose mode is not DIR_MODE."""
    return {inner: mode & PERMS for inner, (mode, empty) in sorted(found.dirs.items())
            if empty or mode & PERMS != DIR_MODE}


def shape_items(m: Manifest) -> List[Tuple[str, str]]:
    """What the folder ``m`` restores holds besides its files' bytes, as paths.dir_files
    lists it for a Dir input's key: (inner path, what)."""
    out: List[Tuple[str, str]] = []
    for f in m.files:
        mode = m.mode(f[0], bool(f[3]))
        if mode != 0o644:
            out.append((f[0], f"mode {mode:o}"))
    out.extend((inner, f"link {target}") for inner, target in m.links.items())
    dirs = m.all_dirs()
    parents = {posixpath.dirname(p) for p in [f[0] for f in m.files] + list(m.links) + list(dirs)}
    for inner, mode in dirs.items():
        if inner not in parents:
            out.append((inner, "empty"))
        if mode != DIR_MODE:
            out.append((inner, f"mode {mode:o}"))
    return out


# -- safety -----------------------------------------------------------------------------------
def contained(inner: str, target: str) -> bool:
    """Whether the link ``inner`` (a path inside an output folder) -> ``target`` resolves
    inside that folder whatever the other links in it are: relative, and its ".." parts all
    lead (a ".." after a name would climb from wherever that name, perhaps a link, points),
    at most as many as the folders above the link inside the output."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    return ".." not in parts[ups:] and ups <= inner.count("/")


def entries_problem(rel: str, m: Manifest, names: Set[str]) -> Optional[str]:
    """Why the folders and links of manifest ``m`` (output ``rel``; ``names``: its files)
    may not be restored: each a safe path, not listed twice, no entry under a file or link."""
    from zenbuild.store.signing import safe_rel

    leaves = set(names)
    for inner in list(m.links) + list(m.dirs):
        if not safe_rel(inner) or inner in leaves:
            return f"the manifest of output {rel} is incomplete or unsafe"
        if inner in m.links:
            leaves.add(inner)
    for inner in list(m.modes):
        if inner not in names:
            return f"the manifest of output {rel} is incomplete or unsafe"
    for inner in list(names) + list(m.links) + list(m.dirs):
        parent = posixpath.dirname(inner)
        while parent:
            if parent in leaves:
                return f"the manifest of output {rel} lists {parent} as a file and a folder"
            parent = posixpath.dirname(parent)
    return None


def escaping_link(m: Manifest) -> Optional[Tuple[str, str]]:
    """A link of ``m`` whose target is absolute or may leave the folder, or None."""
    for inner, target in sorted(m.links.items()):
        if not contained(inner, target):
            return inner, target
    return None


def link_below(base: str, inner: str, checked: Set[str]) -> Optional[str]:
    """The first component of ``inner``'s parents under the real folder ``base`` that is not
    a real folder (a symlink: writing there would go through it), or None. ``checked``:
    parents already seen to be real folders during this restore."""
    parts = inner.split("/")[:-1]
    cur = ""
    for part in parts:
        cur = f"{cur}/{part}" if cur else part
        if cur in checked:
            continue
        try:
            mode = os.lstat(os.path.join(base, cur)).st_mode
        except FileNotFoundError:
            return None  # made by the restore (os.mkdir never follows a link at its name)
        if not stat.S_ISDIR(mode):
            return cur
        checked.add(cur)
    return None


def rmtree(path: str) -> None:
    """shutil.rmtree that also removes a tree whose folders a step made read-only (restored
    as they were): what it cannot remove, its folder (and it, if a folder) is made writable
    by its owner and it is tried once more."""
    import shutil
    import sys

    def again(func: Any, p: str, _exc: Any) -> None:
        for d in (os.path.dirname(p), p):
            try:
                st = os.lstat(d)
                if stat.S_ISDIR(st.st_mode):
                    os.chmod(d, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
            except OSError:
                pass
        func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=again)
    else:
        shutil.rmtree(path, onerror=again)
