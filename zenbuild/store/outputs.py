"""Declared outputs: capture them into the store after a step runs (restoring.py checks and
restores them on a cache hit). A folder output is stored as a manifest blob listing its files'
blobs, modes, folders and symlinks (folders.py).

Outputs never destroy the user's work: a file a restore would overwrite or delete, or a step
about to execute would overwrite or clear, whose bytes the store does not hold (a hand edit, a
file the user added) is first moved under STORE/trash/, with a line saying where; a symlink at
an Output (or at a folder inside an Output folder the store has files under) is never written,
cleared or restored through: the link itself goes to the trash (or, when the store holds its
target text, as for a link Output, is removed) and a real file, folder or the stored link is
made in its place, so nothing outside the project is touched (the trash holds the link). An
Output that already holds files zenbuild did not create is refused (see check_adopt, and
STORE/claims, the outputs zenbuild saw absent before their step first ran); a store inside an
Output, or an Output inside the store, is refused when the run starts; temp files a killed run
left behind are removed; what a step wrote that zenbuild could not store (a full disk) is
still the step's (STORE/unstored), not the user's."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.digest import StatCache, digest_bytes, stat_key
from zenbuild.errors import PathError, StoreError
from zenbuild.lazyre import LazyPattern
from zenbuild.paths import parents
from zenbuild.store.db import INLINE_MAX, ActionEntry, Store
from zenbuild.store.folders import (
    DIR_MODE,
    PERMS,
    Manifest,
    SpecialFile,
    manifest_dirs,
    parse,
    plain_mode,
    rmtree,
    scan,
    special_kind,
)
from zenbuild.store.unstored import Unstored

# Temp files: blobs.restore_file writes DEST.zenbuild-tmp-PID, renamed over DEST when whole.
TMP_MARK = ".zenbuild-tmp-"
_TMP = LazyPattern(r"\.zenbuild-tmp-(\d+)$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def leftover(name: str) -> bool:
    """Whether ``name`` is a temp file of a zenbuild process that is no longer running."""
    m = _TMP.search(name)
    return m is not None and not pid_alive(int(m.group(1)))


def output_size(root: str, rel: str) -> int:
    """Bytes of the output at ``rel`` (a file, or a folder's files); 0 if unreadable."""
    full = os.path.join(root, rel)
    try:
        if not os.path.isdir(full):
            return os.path.getsize(full)
        return sum(os.path.getsize(os.path.join(full, f)) for f in _walk_files(full))
    except OSError:
        return 0


class OutputMissing(Exception):
    """A step finished without writing an Output it declared."""


def walk_files(base: str) -> List[str]:
    """The files under ``base``, relative, sorted, without a zenbuild run's temp files."""
    return _walk_files(base)


def _walk_files(base: str, leftovers: Optional[List[str]] = None,
                links: Optional[List[str]] = None) -> List[str]:
    """The files under ``base``, relative, sorted; temp files of a zenbuild run are left out
    (and, when ``leftovers`` is given, those of a dead run are listed in it, as full paths).
    A symlink to a folder is not followed (as os.walk does); when ``links`` is given, such
    links are listed in it, relative to ``base``."""
    found: List[str] = []
    todo = [("", base)]
    while todo:
        rel, path = todo.pop()
        try:
            entries = os.scandir(path)
        except OSError:
            continue  # what os.walk does with a folder it cannot list
        with entries:
            for e in entries:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not e.is_symlink():
                        todo.append((rel + e.name + "/", e.path))
                    elif links is not None:
                        links.append(rel + e.name)
                    continue
                if TMP_MARK in e.name:
                    if leftovers is not None and leftover(e.name):
                        leftovers.append(e.path)
                    continue
                found.append(rel + e.name)
    return sorted(found)


def capture(root: str, rel: str, store: Store, statcache: StatCache,
            links: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, Any]:
    """Store the output at ``rel``; returns its record {"kind", "digest", "size"} (a file's
    also "exec" and "mode"). A folder is walked without following a link: a symlink in it is
    kept as a link (its target text), never as what it points at; its files keep their modes,
    its empty folders are listed (store/folders.py). An Output that is itself a symlink is
    kept the same way, as kind "link" whose blob is its target text (it was stored as what it
    pointed at, and the next run took the step's own link for the user's and replaced it by
    a copy). Raises SpecialFile for a fifo, socket or device at ``rel`` or in a folder
    Output, OutputMissing when nothing is at ``rel``. ``links``, when given, gets the links
    found in a folder Output (rel -> inner path -> target text)."""
    full = os.path.join(root, rel)
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        raise OutputMissing(rel) from None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(full)
        digest = store.put_blob(target.encode("utf-8", "surrogateescape"))
        return {"kind": "link", "digest": digest, "size": 0}
    if stat.S_ISREG(st.st_mode):
        digest, size = _put(store, statcache, rel, full, st)
        return {"kind": "file", "digest": digest, "size": size,
                "exec": bool(st.st_mode & stat.S_IXUSR), "mode": stat.S_IMODE(st.st_mode) & PERMS}
    if stat.S_ISDIR(st.st_mode):
        found = scan(full)
        if found.special:
            inner, what = sorted(found.special.items())[0]
            raise SpecialFile(f"{rel}/{inner}", what)
        if links is not None and found.links:
            links[rel] = dict(found.links)
        m = Manifest(dirs=manifest_dirs(found), links=dict(sorted(found.links.items())),
                     top=None if stat.S_IMODE(st.st_mode) & PERMS == DIR_MODE
                     else stat.S_IMODE(st.st_mode) & PERMS)
        total = 0
        for inner, ist in sorted(found.files.items()):
            p = os.path.join(full, inner)
            digest, size = _put(store, statcache, f"{rel}/{inner}", p, ist)
            ex = bool(ist.st_mode & stat.S_IXUSR)
            m.files.append([inner, digest, size, ex])
            if stat.S_IMODE(ist.st_mode) & PERMS != plain_mode(ex):
                m.modes[inner] = stat.S_IMODE(ist.st_mode) & PERMS
            total += size
        mdigest = store.put_blob(m.encode())
        return {"kind": "dir", "digest": mdigest, "size": total}
    raise SpecialFile(rel, special_kind(st.st_mode))  # a fifo, a socket, a device


def written_through_links(root: str, links: Dict[str, Dict[str, str]], since_ns: int,
                          limit: int = 10_000) -> List[str]:
    """Files a step wrote through a link in its Output folder that leads to a folder outside
    it (``build/o/data -> ../shared``): the store keeps the link, not what it leads to, so
    they are undeclared writes. They are the files there modified since ``since_ns`` (the
    step's start), inside the project (one outside it is not the project's, as any write
    there), at most ``limit`` looked at per link."""
    real_root = os.path.realpath(root)
    found: List[str] = []
    for out, inner_links in links.items():
        base = os.path.realpath(os.path.join(root, out))
        for inner in inner_links:
            real = os.path.realpath(os.path.join(root, out, inner))
            if (real == base or real.startswith(base + os.sep) or not os.path.isdir(real)
                    or not real.startswith(real_root + os.sep)):
                continue
            seen = 0
            for dirpath, _dirs, filenames in os.walk(real):
                for name in filenames:
                    seen += 1
                    full = os.path.join(dirpath, name)
                    try:
                        if os.lstat(full).st_mtime_ns >= since_ns:
                            found.append(os.path.relpath(full, real_root).replace(os.sep, "/"))
                    except OSError:
                        pass
                if seen >= limit:
                    break
    return sorted(set(found))


def _put(store: Store, statcache: StatCache, rel: str, full: str, st: os.stat_result) -> Tuple[str, int]:
    if st.st_mode & 0o044 != 0o044:  # others may not read it: neither may they its stored copy
        digest, size = store.put_file(full, private=True)
        statcache.record(rel, full, digest, before=st)
        return digest, size
    if st.st_size <= INLINE_MAX:
        # One read to hash and store a small file; an fstat of it then tells both that the
        # read got all of it and that it did not change since ``st`` (else: the slow path).
        read_ns = statcache.clock()  # the stat cache's clock: racy-clean is judged by it
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, INLINE_MAX + 1)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        key = stat_key(st)
        if len(data) == after.st_size <= INLINE_MAX and stat_key(after) == key:
            digest = store.put_blob(data)
            statcache.remember(rel, key, digest, read_ns)
            return digest, len(data)
        digest, size = store.put_file(full)
        statcache.record(rel, full, digest, before=st)
        return digest, size
    digest, size = statcache.digest(rel, full, st)
    if not store.has_blob(digest):
        digest, size = store.put_file(full)
    return digest, size


def _move(src: str, dest: str) -> None:
    """Move ``src`` (a file, a folder or a symlink: the link itself) to ``dest``; the store
    may be on another file system than the project (then a copy, and the original removed
    only once the copy is whole)."""
    try:
        os.replace(src, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    import shutil

    try:
        if os.path.islink(src):
            os.symlink(os.readlink(src), dest)
        elif os.path.isdir(src):
            shutil.copytree(src, dest, symlinks=True)
        else:
            shutil.copy2(src, dest, follow_symlinks=False)
    except BaseException:
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest, ignore_errors=True)
        else:
            _unlink(dest)
        raise
    if os.path.isdir(src) and not os.path.islink(src):
        rmtree(src)
    else:
        os.unlink(src)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Trash:
    """STORE/trash/TIME-PID/REL: where a user's version of an output goes before zenbuild
    overwrites or removes it. Nothing is moved when what is there is zenbuild's own: each
    file (or link) is at its path with the bytes (or target) that one of ``entries`` (the
    step's latest entry, the one being restored) recorded there, or failing that any entry
    of the store did (another pipeline's run of the step, an Output path a param names, a
    renamed step), or what a step whose result was not stored left there (``unstored``).
    That the store holds the same bytes is not enough: a copy the user made of one of the
    step's files, kept beside it, is the user's."""

    def __init__(self, store: Store, say: Optional[Callable[[str], None]] = None,
                 entries: Iterable[Optional[ActionEntry]] = ()) -> None:
        self.store = store
        self.say = say or _say
        self._folder: Optional[str] = None
        self._entries = [e for e in entries if e is not None]
        self._owned: Optional[Set[Tuple[str, str]]] = None
        self._wide: Dict[str, Set[Tuple[str, str]]] = {}  # an Output -> any entry's records
        self._unstored: Optional[Unstored] = None

    def owned(self) -> Set[Tuple[str, str]]:
        """(project path, digest) of every file and link the entries recorded at their
        Outputs (a link's digest is its target text's), read once."""
        if self._owned is None:
            owned: Set[Tuple[str, str]] = set()
            for e in self._entries:
                for rel, rec in e.outputs.items():
                    owned |= self._pairs(rel, rec)
            self._owned = owned
        return self._owned

    def _pairs(self, rel: str, rec: Dict[str, Any]) -> Set[Tuple[str, str]]:
        """(path, digest) of what the output record ``rec`` of the Output ``rel`` holds: the
        file or link itself, or each file and link its folder manifest lists (none when the
        manifest is gone)."""
        if rec.get("kind") != "dir":
            return {(rel, str(rec.get("digest")))}
        try:
            m = parse(self.store.get_blob(rec["digest"]))
        except (KeyError, ValueError, TypeError, AttributeError):
            return set()
        pairs = {(f"{rel}/{f[0]}", f[1]) for f in m.files}
        pairs.update((f"{rel}/{inner}", _text_digest(target)) for inner, target in m.links.items())
        return pairs

    def folder(self) -> str:
        """This Trash's own folder, made now: TIME-PID, or TIME-PID-N when another Trash of
        this process (a second run in the same second: the Python API, watch) made that one
        (sharing it, a second user's version of a path would replace the first)."""
        if self._folder is None:
            base = os.path.join(self.store.path, "trash",
                                f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            os.makedirs(os.path.dirname(base), exist_ok=True)
            path, n = base, 1
            while True:
                try:
                    os.mkdir(path)
                    break
                except FileExistsError:
                    n += 1
                    path = f"{base}-{n}"
            self._folder = path
        return self._folder

    def keep_if_users(self, root: str, rel: str, statcache: Optional[StatCache],
                      unstored: Optional[Unstored] = None,
                      doing: str = "before replacing it") -> bool:
        """Move ``rel`` (a file, a folder, or a symlink: the link itself) to the trash unless
        every file of it is in the store (or, per ``unstored``, is what its step wrote and
        zenbuild could not store); True when it was moved (it is gone from ``rel``).
        ``doing`` ends the line saying so (what zenbuild does to the path next, and why)."""
        full = os.path.join(root, rel)
        if not os.path.lexists(full):
            return False
        if self._zenbuilds(root, rel, statcache, unstored):
            return False
        dest = os.path.join(self.store.path, "trash")
        try:
            dest = os.path.join(self.folder(), rel)
            n = 1
            while os.path.lexists(dest):  # the same path trashed twice by one Trash: keep both
                n += 1
                dest = os.path.join(self.folder(), f"{rel}.{n}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            _move(full, dest)
        except OSError as e:
            raise StoreError(
                f"cannot move your version of {rel} to the trash ({dest}): "
                f"{e.strerror or e}. It is left where it is, and zenbuild stops rather than "
                f"overwrite it: move {rel} away yourself (or make room for the trash, "
                f"{os.path.join(self.store.path, 'trash')}, or make it writable), and run "
                "again.") from None
        if statcache is not None:
            statcache.forget([rel])
        self.say(f"zenbuild: moved your version of {rel} to {dest} {doing}")
        return True

    def zenbuilds(self, root: str, rel: str, statcache: Optional[StatCache],
                  unstored: Optional[Unstored] = None) -> bool:
        """Whether everything at ``rel`` is zenbuild's own (keep_if_users would move nothing):
        what a dry run asks before saying what a run would do there."""
        return self._zenbuilds(root, rel, statcache, unstored)

    def _wider(self, rel: str) -> Set[Tuple[str, str]]:
        """What any entry of the store recorded at the Output ``rel`` is in, or at ``rel``
        (an Output whose path a param names, another pipeline's run of the step, a renamed
        step): asked only when ``owned()`` does not cover what is there."""
        owned: Set[Tuple[str, str]] = set()
        for out in parents(rel):
            got = self._wide.get(out)
            if got is None:
                got = self._wide[out] = set().union(
                    *(self._pairs(out, rec) for rec in self.store.outputs_recorded_at(out)))
            owned |= got
        return owned

    def _zenbuilds(self, root: str, rel: str, statcache: Optional[StatCache],
                    unstored: Optional[Unstored] = None) -> bool:
        """Whether everything at ``rel`` is zenbuild's own (see the class): what the given
        entries recorded there, else what any entry did."""
        if unstored is None:  # (a restore: what a step whose result was not stored left)
            unstored = self._unstored = self._unstored or Unstored(self.store)
        if self._ours(root, rel, statcache, unstored, self.owned()):
            return True
        return self._ours(root, rel, statcache, unstored, self.owned() | self._wider(rel))

    def _ours(self, root: str, rel: str, statcache: Optional[StatCache],
              unstored: Optional[Unstored], owned: Set[Tuple[str, str]]) -> bool:
        full = os.path.join(root, rel)
        if os.path.islink(full):  # zenbuild's own when an entry recorded this link there (a
            try:  # link Output, or a link in a folder Output)
                target = os.readlink(full)
            except OSError:
                return False
            return (rel, _text_digest(target)) in owned
        holds = unstored.holds if unstored is not None and unstored.known() else None
        if not (os.path.isfile(full) or os.path.isdir(full)):  # a fifo, a socket: the step's
            try:  # when its step left it there, in a result that could not be stored
                return holds is not None and holds(rel, os.lstat(full))
            except OSError:
                return False
        if os.path.isfile(full):
            names = [rel]
        else:
            try:
                found = scan(full)
            except OSError:
                return False
            for inner in found.special:  # no copy of it (never opened): the step's only as
                try:  # for a special file at the Output
                    if holds is None or not holds(f"{rel}/{inner}",
                                                  os.lstat(os.path.join(full, inner))):
                        return False
                except OSError:
                    return False
            for inner, target in found.links.items():  # a link is kept as its target text
                if (f"{rel}/{inner}", _text_digest(target)) not in owned:
                    return False
            names = [f"{rel}/{f}" for f in sorted(found.files)]
        for name in names:
            try:
                if holds is not None and holds(name, os.stat(os.path.join(root, name))):
                    continue  # what its step wrote, left unstored by a failed capture
                if statcache is not None:
                    digest, _ = statcache.digest(name, os.path.join(root, name))
                else:
                    from zenbuild.digest import digest_file

                    digest, _ = digest_file(os.path.join(root, name))
            except OSError:
                return False
            if (name, digest) not in owned:
                return False
        return True


def _text_digest(target: str) -> str:
    """The digest a link's target text is stored under (capture, restoring)."""
    return digest_bytes(target.encode("utf-8", "surrogateescape"))


def sweep_leftovers(root: str, rels: Iterable[str]) -> int:
    """Remove the temp files a killed run left beside file outputs (``DEST.zenbuild-tmp-PID``
    whose PID is not running); temp files inside folder outputs go when the folder is next
    served or rebuilt. One listing per folder holding outputs. Returns how many went."""
    gone = 0
    parents: Dict[str, None] = {}  # (a project path's folder: no path call an output)
    for rel in rels:
        parents[rel.rpartition("/")[0]] = None
    for folder in parents:
        parent = os.path.join(root, folder) if folder else root
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            if TMP_MARK in name and leftover(name):
                _unlink(os.path.join(parent, name))
                gone += 1
    return gone


def check_placement(root: str, store_path: str, rels: Iterable[Tuple[str, str]],
                    steps: Optional[Set[str]] = None) -> None:
    """Refuse a store inside (or at) a declared Output, and an Output inside the store:
    restoring or clearing the output would destroy the store, and capturing it would copy the
    store into itself. Refuse too an Output whose folder a file blocks, of the ``steps`` this
    run builds (default: all; ``run --step good`` is not refused over another step's
    Output). ``rels``: (step, output path relative to ``root``)."""
    store = os.path.realpath(store_path)
    real_root = os.path.realpath(root)
    by_folder: Dict[str, List[Tuple[str, str, str]]] = {}  # outputs share a few folders
    for step, rel in rels:
        folder, _, name = rel.rpartition("/")
        by_folder.setdefault(folder, []).append((step, rel, name))
    resolved: List[Tuple[List[Tuple[str, str, str]], List[str]]] = []
    moved = False  # whether any Output is elsewhere than its path says (a link on the way)
    for folder, outs in by_folder.items():
        parent = os.path.join(root, folder) if folder else root
        if folder:
            for step, rel, _ in outs:
                if steps is None or step in steps:
                    _check_folder(root, folder, step, rel)
                    break
        reals = _realpaths(parent, [n for _, _, n in outs])
        resolved.append((outs, reals))
        if not moved:  # one look a folder: its Outputs share its real path (a name . or ..
            at = os.path.join(real_root, folder) if folder else real_root  # is looked at
            moved = (reals[0] != f"{at}/{outs[0][2]}"  # whole: taken as moved)
                     or any(n in ("", ".", "..") for _, _, n in outs))
        for (step, rel, _), out in zip(outs, reals):
            if store == out or store.startswith(out + os.sep):
                raise PathError(
                    f"the store {store_path} is inside Output({rel!r}) of step {step}: the "
                    "step's output would take the store with it. Point `store` in "
                    "zenbuild.toml at a folder outside every Output (the default, .zenbuild, "
                    "is), or declare the Output one level deeper.")
            if out.startswith(store + os.sep):
                raise PathError(
                    f"Output({rel!r}) of step {step} is inside the store {store_path}: "
                    "zenbuild owns that folder. Write the output somewhere in the project "
                    "outside it.")
    if moved:  # the graph compared the paths as written; compare where they are
        _check_same_place([(out, step, rel) for outs, reals in resolved
                           for (step, rel, _), out in zip(outs, reals)])


def _check_same_place(where: List[Tuple[str, str, str]]) -> None:
    """Refuse two Outputs that are one file or folder, or one inside the other, once the links
    on their paths are followed (``real/x.txt`` and ``alias/x.txt``, alias -> real): both steps
    would write it, and each entry would keep whichever wrote last."""
    # by components (the separator as the lowest character), as Graph._link_files sorts
    ordered = sorted(where, key=lambda w: w[0].replace(os.sep, "\0"))
    for (a, sa, ra), (b, sb, rb) in zip(ordered, ordered[1:]):
        if a == b or b.startswith(a + os.sep):
            how = "the same path" if a == b else "one inside the other"
            raise PathError(
                f"steps {sa} and {sb} declare Outputs {ra!r} and {rb!r}, which are {how} "
                "once the symbolic links on the way are followed. Each output file or folder "
                "must belong to exactly one step: declare both by one path, or give each "
                "step an output of its own.")


def _check_folder(root: str, folder: str, step: str, rel: str) -> None:
    """Refuse an Output whose folder cannot be made because a file (not a folder) stands on
    its path (``Output("data/in.txt/x")``): one stat of the folder, none of its parents
    unless it fails so."""
    try:
        st = os.stat(os.path.join(root, folder))
    except FileNotFoundError:
        _check_no_dangling_link(root, folder, step, rel)
        return  # made when the step runs
    except NotADirectoryError:
        st = None
    except OSError:
        return  # unreadable: said when the step runs, as before
    if st is not None and stat.S_ISDIR(st.st_mode):
        return
    blocker = folder
    for above in reversed(parents(folder)):
        if not os.path.isdir(os.path.join(root, above)):
            blocker = above
            break
    raise PathError(
        f"Output({rel!r}) of step {step}: {blocker!r} is a file, not a folder, so nothing "
        "can be written inside it. Declare the Output at another path, or move that file.")


def _check_no_dangling_link(root: str, folder: str, step: str, rel: str) -> None:
    """Refuse an absent Output folder whose path runs through a symlink to nothing (a scratch
    disk not mounted): neither the step nor a restore could make the folder, and a dry run
    said "a run would restore" where the run then failed."""
    for above in reversed(parents(folder)):  # from the top
        full = os.path.join(root, above)
        try:
            if not stat.S_ISLNK(os.lstat(full).st_mode):
                continue
            target = os.readlink(full)
        except OSError:
            return  # absent from here down: made when the step runs
        if not os.path.exists(full):
            raise PathError(
                f"Output({rel!r}) of step {step}: {above!r} is a symbolic link to {target!r}, "
                "which does not exist, so the Output's folder cannot be made. Make (or mount) "
                "what it points at, or remove the link.")
        return


def _realpaths(parent: str, names: List[str]) -> List[str]:
    """Where each Output ``parent/name`` is, its folder resolved (os.path.realpath, once for
    all the names) but the name itself not followed: an Output that is a symlink is never
    written, cleared or restored through (its link goes to the trash, or is stored and
    restored as a link), so the folder a link points at is not the Output's. Following it
    refused every run after a step made ``os.symlink("..", out)``: the store was "inside" the
    project root the link named."""
    real = os.path.realpath(parent)
    into = real if real.endswith("/") else real + "/"  # (os.path.join's result, inline)
    return [os.path.realpath(os.path.join(parent, n)) if n in ("", ".", "..") else into + n
            for n in names]


class Claims:
    """STORE/claims: one project-relative path a line, each an Output that did not exist when
    its step was about to run for the first time, so what is there later is zenbuild's (or
    its step's). Appended before the step runs, so a killed run's partial output is still
    known as zenbuild's; read only when an existing output has no entry listing it. The file
    is opened once for appending, at the first claim, and kept open until close() (a cold run
    of N steps opened it N times); each claim is one write() of whole lines, as before."""

    def __init__(self, store: Store) -> None:
        self.path = os.path.join(store.path, "claims")
        self._known: Optional[set[str]] = None
        self._fd: Optional[int] = None

    def known(self) -> set[str]:
        if self._known is None:
            try:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    self._known = {line.rstrip("\n") for line in f}  # (names not UTF-8 kept)
            except FileNotFoundError:
                self._known = set()
        return self._known

    def add(self, rels: List[str]) -> None:
        known = self.known()
        new = [r for r in rels if r not in known]
        if not new:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, "".join(r + "\n" for r in new).encode("utf-8", "surrogateescape"))
        known.update(new)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_ABSENT = ""  # what _occupied() says of nothing at all (an empty folder is None)


def _occupied(full: str) -> Optional[str]:
    """What is at ``full`` that a first run must not take over, or None (an empty dir) or
    _ABSENT (nothing there). One lstat (islink, isfile, isdir and lexists in one look)."""
    try:
        mode = os.lstat(full).st_mode
    except (OSError, ValueError):
        return _ABSENT  # what lexists() says for a path it cannot stat
    if stat.S_ISLNK(mode):  # a symlink, even to a folder: islink() came first
        try:
            target = os.readlink(full)
        except OSError:
            return "a symbolic link"
        return f"a symbolic link to {target!r}"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        files = _walk_files(full)
        if files:
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            return f"a folder holding {len(files)} file(s) ({shown})"
        return None
    return "something"


def check_adopt(root: str, step: str, rels: List[str], known: Dict[str, Any], store: Store,
                claims: Claims) -> List[str]:
    """Before ``step`` executes: each Output not in ``known`` (its latest entry's outputs) must
    be absent (or an empty folder), claimed earlier, or listed by some entry of the store;
    otherwise it holds the user's files, and the run stops (PathError). Absent ones are
    claimed. Returns the Outputs it found absent (nothing there: not even an empty folder)."""
    claim: List[str] = []
    absent: List[str] = []
    for rel in rels:
        if rel in known:
            continue
        what = _occupied(os.path.join(root, rel))
        if what is _ABSENT:
            absent.append(rel)
        if not what:
            claim.append(rel)
            continue
        if rel in claims.known() or _listed(store, rel):
            continue
        raise PathError(
            f"Output({rel!r}) of step {step} already exists and zenbuild did not create it: "
            f"{rel} is {what}. zenbuild would overwrite and delete what is there. Move it away "
            "(or delete it) and run again, or declare the Output at a path that does not "
            "exist yet. (If an earlier store made it, one since moved or deleted, delete it.)")
    if claim:
        claims.add(claim)
    return absent


def _listed(store: Store, rel: str) -> bool:
    """Whether any entry of the store lists ``rel`` as an output (zenbuild made it before,
    perhaps under another step name or params)."""
    needle = json.dumps(rel)[1:-1]
    return store.db.execute("SELECT 1 FROM actions WHERE outputs LIKE ? LIMIT 1",
                            (f'%"{needle}":%',)).fetchone() is not None


def output_rels(graph: Any) -> List[Tuple[str, str]]:
    """(step, output path) of every declared Output of ``graph``."""
    return [(name, rel) for name, node in graph.nodes.items() for rel in node.outputs]


def sweep(root: str, store_path: str, rels: List[Tuple[str, str]]) -> None:
    """Under the workspace lock, before a real run: remove the temp files killed runs left
    beside file outputs and in STORE/tmp (a dry run removes nothing)."""
    sweep_leftovers(root, [rel for _, rel in rels])
    sweep_store_tmp(os.path.join(store_path, "tmp"))


def sweep_store_tmp(folder: str) -> int:
    """Remove STORE/tmp files (named PID-RANDOM by blobs.py) whose PID is not running."""
    gone = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _unlink(os.path.join(folder, name))
            gone += 1
    return gone
