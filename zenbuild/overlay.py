"""What a dry run pretends a real run would have put on disk before downstream steps look: the
outputs it would restore from the store and the files it would remove (OutputOverlay), and,
for what a listing or a pattern sees, a mirror of the names a real run would find (Mirror).

A dry run changes nothing on disk, yet a downstream step's inputs, reads, listings and globs
must be judged as a real run would judge them after its restores: otherwise ``status`` and
``run --dry-run`` say "would execute" for a step the run then serves. The overlay answers per
path, so every other file is still served by the stat cache; paths are resolved through the
symlinks the run would restore (a link Output, a link in a folder Output) and through those
on disk, the way the kernel resolves them on open()."""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING, Container, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.paths import DIR_SKIP, MissingInput, dir_files, glob_match, parents

if TYPE_CHECKING:
    from zenbuild.graph import FileRef

_MAX_HOPS = 40  # symlinks followed on one path before the kernel says ELOOP

Hit = Tuple[str, int]  # (digest, size)


class OutputOverlay:
    """What serving entries in a dry run would do, as the restore plans say (restoring.py):
    ``files``, the files it writes (path -> (digest, size)); ``links``, the links it makes
    (path -> target text); ``removed``, what it removes; ``ops``, all of it in order, with the
    folders it makes, for the mirror. What a plan leaves alone is already right on disk, so
    deleting one file of a big folder Output pretends one file. ``folders`` and ``shape``:
    the folder Outputs restored exactly and what they hold besides bytes, for a Dir's key.
    The scheduler owns it; file_digests() and discovered.Discovery consult it per path."""

    def __init__(self) -> None:
        self.files: Dict[str, Hit] = {}
        self.links: Dict[str, str] = {}
        self.removed: Set[str] = set()
        self.folders: Set[str] = set()
        self.shape: List[Tuple[str, str]] = []
        self.ops: List[Tuple[str, str, str]] = []  # (kind, path, link target)
        self._paths: Dict[str, str] = {}  # every op's path -> the last op's kind there
        self._touched: Set[str] = set()  # those and the folders above them

    # -- what serving an entry pretends ---------------------------------------------------------
    def add_file(self, rel: str, digest: str, size: int) -> None:
        # (what was there before, a REMOVE of the same plan, stays removed: under a folder
        # removed and made again nothing of the disk's is left)
        self.links.pop(rel, None)
        self.files[rel] = (digest, size)
        self._op("file", rel)

    def add_link(self, rel: str, target: str) -> None:
        self.files.pop(rel, None)
        self.links[rel] = target
        self._op("link", rel, target)

    def add_dir(self, rel: str) -> None:
        """A folder the restore makes."""
        self._op("dir", rel)

    def shape_folder(self, rel: str, shape: Iterable[Tuple[str, str]]) -> None:
        """A folder Output the restore makes exactly ``shape`` (its modes, links and empty
        folders, as paths.dir_files lists them): what a Dir over it holds besides bytes."""
        self.folders.add(rel)
        self.shape.extend(shape)

    def remove(self, rel: str) -> None:
        self.removed.add(rel)
        self._op("remove", rel)

    def _op(self, kind: str, rel: str, target: str = "") -> None:
        self.ops.append((kind, rel, target))
        self._paths[rel] = kind
        self._touched.update(parents(rel))
        self._touched.add(".")

    def active(self) -> bool:
        return bool(self.ops or self.folders)

    def related(self, base: str) -> bool:
        """Whether anything pretended is at, under or above project folder ``base``."""
        return base in self._touched or self.changed(base)

    def changed(self, rel: str) -> bool:
        """Whether ``rel`` is at or under a path the pretended restores write or remove: what
        is there is the mirror's to say, not the disk's."""
        return _at_or_under(rel, self._paths)

    def touched(self, rel: str) -> bool:
        """Whether ``rel`` is a pretended path or a folder above one (made by the restores)."""
        return rel in self._touched

    def canonical(self, root: str, rel: str) -> Optional[str]:
        """Folder ``rel`` with every symlink on it followed (those the restores make, and
        those on disk): a project path, an absolute one outside the project, or None (a
        loop)."""
        path = rel
        for _ in range(_MAX_HOPS):
            if path == "." or os.path.isabs(path):
                return path
            nxt = self._follow(root, path)
            if nxt is None:
                return path
            path = nxt
        return None

    # -- answering for a path -------------------------------------------------------------------
    def hidden(self, rel: str) -> bool:
        """Whether what is on disk at ``rel`` is gone after the pretended restores: it, or a
        folder above it, is removed."""
        return bool(self.removed) and _at_or_under(rel, self.removed)

    def where(self, root: str, rel: str) -> Tuple[Optional[Hit], Optional[str]]:
        """How a real run would find file ``rel`` after the pretended restores: (hit, None)
        when it is a restored file; (None, path) when the disk answers, at ``path`` (``rel``
        itself, where its symlinks lead in the project, or an absolute path outside it);
        (None, None) when nothing would be there (removed, a loop of links)."""
        path = rel
        for _ in range(_MAX_HOPS):
            hit = self.files.get(path)
            if hit is not None:
                return hit, None
            nxt = self._follow(root, path)
            if nxt is None:
                break
            if os.path.isabs(nxt):
                return None, nxt
            path = nxt
        else:
            return None, None
        if self.hidden(path) or self._paths.get(path) == "dir":  # (a folder: no file there,
            return None, None  # whatever is on disk now)
        return None, path

    def link_at(self, root: str, p: str) -> Optional[str]:
        """The target text of a symlink at project path ``p`` after the pretended restores."""
        t = self.links.get(p)
        if t is not None:
            return t
        if p in self._paths or self.hidden(p):
            return None  # made (or removed) by the restore: not what is on disk
        try:
            return os.readlink(os.path.join(root, p))
        except (OSError, ValueError):
            return None

    def _follow(self, root: str, path: str) -> Optional[str]:
        """``path`` with its first symlink replaced by where it points (project-relative, or
        absolute when it leaves the project); None when no link is on the way."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            t = self.link_at(root, p)
            if t is None:
                continue
            return resolve_target(root, p, t, parts[i:])
        return None

    # -- Dir inputs -----------------------------------------------------------------------------
    def _dir_base(self, root: str, ref: FileRef) -> Optional[str]:
        """The Dir's folder with its links followed, None when it leaves the project."""
        real = self.canonical(root, ref.path)
        return None if real is None or os.path.isabs(real) else real

    def shape_of(self, root: str, ref: FileRef, on_disk: List[str]) -> List[str]:
        """The shape items of Dir ``ref`` after the pretended restores: those on disk not at
        or under a pretended path (nor an empty folder a restore fills), and the pretended
        ones (a restored folder's, a restored link's target)."""
        real = self._dir_base(root, ref)
        if real is None:
            return on_disk
        base = "" if real == "." else real + "/"
        pattern = ref.glob or "**/*"
        mine = tuple(f + "/" for f in self.folders)  # their shape is the manifest's
        out = []
        for it in on_disk:
            inner, _, what = it.partition("\0")
            p = base + inner
            if not (self.changed(p) or (what == "empty" and self.touched(p))
                    or (p + "/").startswith(mine)):
                out.append(it)
        seen = set()
        for p, what in self.shape:
            if p.startswith(base) and glob_match(p[len(base):], pattern):
                out.append(f"{p[len(base):]}\0{what}")
                seen.add(p)
        for p, target in self.links.items():
            if p not in seen and p.startswith(base) and glob_match(p[len(base):], pattern):
                out.append(f"{p[len(base):]}\0link {target}")
        return out

    def listing(self, root: str, ref: FileRef) -> List[str]:
        """The files a Dir input would cover after the pretended restores (named under the
        Dir's own path, as dir_files names them, when that path runs through a link)."""
        real = self._dir_base(root, ref)
        if real is None:
            return dir_files(root, ref.path, ref.glob)
        base = "" if real == "." else real + "/"
        own = "" if ref.path == "." else ref.path.rstrip("/") + "/"
        pattern = ref.glob or "**/*"

        def mine(p: str) -> bool:
            return (p.startswith(base) and glob_match(p[len(base):], pattern)
                    and not any(d in DIR_SKIP for d in p[len(base):].split("/")[:-1]))

        extra = {p for p in self.files if mine(p)}
        # a restored link to a file is listed as the file (dir_files)
        extra.update(p for p in self.links if mine(p) and self._file_after(root, p))
        found: Set[str] = set()
        if not self.changed(real):
            shape: List[str] = []
            try:
                found = {f for f in dir_files(root, real, ref.glob, shape) if not self.changed(f)}
            except MissingInput:
                if not extra and not self.touched(real):
                    raise MissingInput(f"input folder {ref.path!r} does not exist") from None
            for item in shape:  # a link on disk counts as a file by where it leads after
                inner, _, what = item.partition("\0")  # the restores (dir_files: now)
                p = base + inner
                if what.startswith("link ") and not self.changed(p):
                    if self._file_after(root, p):
                        found.add(p)
                    else:
                        found.discard(p)
        elif not extra and not self.touched(real):
            raise MissingInput(f"input folder {ref.path!r} does not exist")
        return sorted(own + f[len(base):] for f in found | extra)


    def _file_after(self, root: str, p: str) -> bool:
        """Whether a file is at ``p`` (a link's path) after the pretended restores."""
        hit, path = self.where(root, p)
        return hit is not None or (path is not None and os.path.isfile(
            path if os.path.isabs(path) else os.path.join(root, path)))


def _at_or_under(rel: str, paths: Container[str]) -> bool:
    """Whether ``rel`` or a folder above it is one of ``paths``."""
    return any(p in paths for p in parents(rel))


def resolve_target(root: str, link: str, target: str, rest: List[str]) -> str:
    """Where ``rest`` below symlink ``link`` (project path) to ``target`` is: a normalized
    project path, or an absolute one when the link leads out of the project."""
    top = root.rstrip("/")
    if target.startswith("/"):
        t = os.path.normpath(target)
        if t == top:
            base = "."
        elif t.startswith(top + "/"):
            base = t[len(top) + 1:]
        else:
            return os.path.join(t, *rest) if rest else t
    else:
        base = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
        if base == ".." or base.startswith("../"):  # out of the project, or out and back
            t = os.path.normpath(os.path.join(top, base))
            if t != top and not t.startswith(top + "/"):
                return os.path.join(t, *rest) if rest else t
            base = "." if t == top else t[len(top) + 1:]
    return posixpath.normpath(posixpath.join(base, *rest)) if rest else base


class Mirror:
    """A folder holding only what an overlay pretends (its restored files, empty; its folders,
    links and empty folders; the folders above them), laid out as in the project: a listing
    or a pattern a dry run evaluates near a pretended restore is evaluated both on the disk
    and here, and the two are merged (discovered.Discovery): a name under a pretended path is
    the mirror's, every other name the disk's. Nothing else is copied, so a dry run costs what
    the listing costs, whatever the project holds. Kept current with the overlay's ``ops``.

    Nothing in it leads out of it: a link keeps its target text when that stays in the
    project (it resolves in the mirror as in the project), a link to a project path by its
    absolute name points at the mirror's copy, and a link that leaves the project points at
    nothing (a path beside the mirrored root that is never made); every write checks that its
    folder's real path is in the mirrored root."""

    def __init__(self, root: str, over: OutputOverlay, folder: str) -> None:
        """``folder``: an empty temporary folder; the mirror is made in it."""
        self.root = root
        self.over = over
        self.top = os.path.realpath(folder)
        self.into = os.path.join(self.top, "project")  # the project's root, mirrored
        self.sink = os.path.join(self.top, "outside")  # where links leaving it point: nothing
        os.mkdir(self.into)
        self._applied = 0

    def ready(self) -> str:
        """The mirror's root, with every op of the overlay applied."""
        ops = self.over.ops
        for kind, rel, target in ops[self._applied:]:
            if kind != "remove":  # (what is removed is simply not here)
                self._apply(kind, rel, target)
        self._applied = len(ops)
        return self.into

    def _apply(self, kind: str, rel: str, target: str) -> None:
        parent, _, name = rel.rpartition("/")
        folder = self._folder(parent)
        if folder is None:
            return
        dest = os.path.join(folder, name)
        if kind == "dir":
            if not os.path.isdir(dest):
                _clear(dest)
                os.mkdir(dest)
            return
        _clear(dest)
        if kind == "file":
            open(dest, "wb").close()
        elif kind == "link":
            os.symlink(self._target(rel, target), dest)

    def _folder(self, rel: str) -> Optional[str]:
        """The real path of mirror folder ``rel`` (project path, "" the root), made if need
        be; None when it would not be inside the mirror."""
        path = os.path.realpath(os.path.join(self.into, rel)) if rel else self.into
        if path != self.into and not path.startswith(self.into + os.sep):
            return None  # (through a link leaving the project: not shown either)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:  # a file where a folder is wanted: the later op wins
            return None
        return path

    def _target(self, link: str, target: str) -> str:
        where = resolve_target(self.root, link, target, [])
        if os.path.isabs(where):  # out of the project: nothing the mirror can show
            return self.sink
        if target.startswith("/"):
            return self.into if where == "." else os.path.join(self.into, where)
        return target


def _clear(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil  # (a no-op run imports neither shutil nor tempfile)

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
