"""Putting declared Outputs back from the store on a cache hit: plan_restore() compares what is
on disk with an entry's records (a no-op finds nothing to do), restore() carries the plan out.
A folder comes back as its manifest lists it (store/folders.py): its files with their bytes
and modes, its empty folders, its symbolic links as links with their target text, and nothing
else. Nothing is written through a symbolic link: links in the way are moved to the trash
before anything is written under them, every parent inside the folder is checked at write
time, and links are made last (a link made by the restore never redirects a later write)."""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.digest import StatCache
from zenbuild.errors import StoreError
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.folders import (
    DIR_MODE,
    PERMS,
    TMP_MARK,
    Manifest,
    link_below,
    parse,
    plain_mode,
    rmtree,
    scan,
)
from zenbuild.store.outputs import Trash, _unlink, _walk_files, leftover

# One step of a plan: (path, op, argument, the Output it belongs to). op is a blob digest (write
# it, argument: the mode), REMOVE (argument None), LINK (argument: the target text), MKDIR or
# CHMOD (argument: the mode).
Todo = Tuple[str, str, Any, str]
REMOVE = ""
LINK = "@link"
MKDIR = "@mkdir"
CHMOD = "@chmod"


def plan_restore(
    root: str, outputs: Dict[str, Dict[str, Any]], store: Store, statcache: StatCache
) -> Tuple[List[Todo], Optional[str]]:
    """What restoring ``outputs`` takes (see Todo), or a reason why the entry cannot be
    served. A folder output must hold exactly its manifest's entries, so what another run of
    the step left there (say, with other params) is removed; otherwise a step reading the
    folder would see it and differ from a clean build."""
    todo: List[Todo] = []
    for rel, rec in sorted(outputs.items()):
        if rec["kind"] == "file":
            problem = _plan_file(root, rel, rec, store, statcache, todo)
        elif rec["kind"] == "link":
            problem = _plan_link(root, rel, rec, store, todo)
        else:
            try:
                m = parse(store.get_blob(rec["digest"]))
            except (KeyError, ValueError, TypeError, AttributeError):
                return [], f"output {rel}: its stored manifest is missing from the store"
            plan = _plan_exact if m.exact else _plan_files_only
            problem = plan(root, rel, m, store, statcache, todo)
        if problem:
            return [], problem
    return todo, None


def _current(frel: str, full: str, st: os.stat_result, statcache: StatCache) -> str:
    row = statcache.records.get(frel)  # a stored row whose stat matches: statcache.digest's
    if type(row) is tuple and row[:4] == (  # first look, inline (a no-op's path)
            st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
        return str(row[4])
    return statcache.digest(frel, full, st)[0]


def _plan_file(root: str, rel: str, rec: Dict[str, Any], store: Store, statcache: StatCache,
               todo: List[Todo]) -> Optional[str]:
    digest = rec["digest"]
    mode = rec.get("mode")
    known = type(mode) is int and 0 <= mode <= PERMS  # recorded since format 2
    full = root + rel if root.endswith("/") else root + "/" + rel  # os.path.join(root, rel)
    current: Optional[str] = None
    try:
        st = os.lstat(full)  # one lstat, so that a symlink there is replaced, not followed
        m = st.st_mode
        if stat.S_ISREG(m):
            row = statcache.records.get(rel)  # _current(), inline: a no-op's path
            current = (str(row[4]) if type(row) is tuple and row[:4] == (
                st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                else statcache.digest(rel, full, st)[0])
            if current == digest:
                if known and m & PERMS != mode:
                    todo.append((rel, CHMOD, mode, rel))
                return None
        elif stat.S_ISLNK(m):
            todo.append((rel, REMOVE, None, rel))  # restore() moves the link to the trash
    except (FileNotFoundError, NotADirectoryError):
        pass
    want = mode if known else plain_mode(bool(rec.get("exec")))
    if not store.has_blob(digest):
        what = "missing" if current is None else "changed"
        return f"output {rel} is {what} and its stored copy is gone"
    todo.append((rel, digest, want, rel))
    return None


def _plan_link(root: str, rel: str, rec: Dict[str, Any], store: Store,
               todo: List[Todo]) -> Optional[str]:
    """An Output that is a symlink: nothing to do while the same link is there; else what is
    in the way goes to the trash (restore's LINK step) and the link is made again."""
    try:
        target = store.get_blob(rec["digest"]).decode("utf-8", "surrogateescape")
    except (KeyError, ValueError, TypeError, AttributeError):
        return f"output {rel}: its stored link target is missing from the store"
    full = os.path.join(root, rel)
    try:
        if os.readlink(full) == target:
            return None
    except (OSError, ValueError):  # absent, or not a link
        pass
    todo.append((rel, LINK, target, rel))
    return None


def _plan_exact(root: str, rel: str, m: Manifest, store: Store, statcache: StatCache,
                todo: List[Todo]) -> Optional[str]:
    """A format-2 manifest: the folder must hold exactly its files (bytes and modes), folders
    (and their modes) and links (and their targets)."""
    base = os.path.join(root, rel)
    want_dirs = m.all_dirs()
    want_files = {f[0]: f for f in m.files}
    try:
        mode: Optional[int] = os.lstat(base).st_mode
    except (OSError, ValueError):
        mode = None
    removed: Set[str] = set()
    on_disk: Dict[str, str] = {}
    found = None
    replaced = mode is not None and not stat.S_ISDIR(mode)
    if replaced:  # a symlink (even to a folder) or a file
        todo.append((rel, REMOVE, None, rel))
        mode = None
    start = len(todo)  # where making the Output folder goes, when it must be made
    if not replaced and mode is not None:
        try:
            found = scan(base, leftover)
        except OSError as e:
            return f"output {rel}: cannot list {e.filename or rel} ({e.strerror or e})"
        for path in found.leftovers:  # a killed run's temp file: never a user's
            _unlink(path)
        on_disk.update({k: "file" for k in found.files})
        on_disk.update({k: "dir" for k in found.dirs})
        on_disk.update({k: "link" for k in found.links})
        on_disk.update({k: "special" for k in found.special})
        for inner in sorted(on_disk):  # parents before what is in them
            if _under(inner, removed):
                continue
            kind = on_disk[inner]
            ok = ((kind == "dir" and inner in want_dirs) or (kind == "file" and inner in want_files)
                  or (kind == "link" and m.links.get(inner) == found.links[inner]))
            if not ok:
                todo.append((f"{rel}/{inner}", REMOVE, None, rel))
                removed.add(inner)

    def present(inner: str, kind: str) -> bool:
        return on_disk.get(inner) == kind and not _under(inner, removed)

    fix: List[Tuple[str, int]] = []
    for inner, dmode in sorted(want_dirs.items()):  # parents first
        if not present(inner, "dir"):
            todo.append((f"{rel}/{inner}", MKDIR, dmode, rel))
            fix.append((inner, dmode))
        elif found is not None and found.dirs[inner][0] & PERMS != dmode:
            fix.append((inner, dmode))
    for inner, digest, _size, ex in m.files:
        frel = f"{rel}/{inner}"
        want = m.mode(inner, bool(ex))
        current: Optional[str] = None
        if found is not None and present(inner, "file"):
            st = found.files[inner]
            current = _current(frel, os.path.join(base, inner), st, statcache)
            if current == digest:
                if stat.S_IMODE(st.st_mode) & PERMS != want:
                    todo.append((frel, CHMOD, want, rel))
                continue
        if not store.has_blob(digest):
            what = "missing" if current is None else "changed"
            return f"output {frel} is {what} and its stored copy is gone"
        todo.append((frel, digest, want, rel))
    for inner, target in sorted(m.links.items()):  # after every file: never written through
        if not present(inner, "link"):
            todo.append((f"{rel}/{inner}", LINK, target, rel))
    if mode is None and (m.top is not None or not (m.files or m.links or m.dirs)):
        # the Output folder itself, with a mode of its own or empty: made 0700 before what is
        todo.insert(start, (rel, MKDIR, None, rel))  # in it, given its mode last (an empty
        fix.append(("", DIR_MODE if m.top is None else m.top))  # one stayed 0700)
    elif mode is not None and m.top is not None and stat.S_IMODE(mode) & PERMS != m.top:
        fix.append(("", m.top))
    for inner, dmode in sorted(fix, reverse=True):  # deepest first, once all is written
        todo.append((f"{rel}/{inner}" if inner else rel, CHMOD, dmode, rel))
    return None


def _under(inner: str, removed: Set[str]) -> bool:
    """Whether ``inner`` or a folder above it is in ``removed``."""
    if not removed:
        return False
    while inner:
        if inner in removed:
            return True
        inner = inner.rpartition("/")[0]
    return False


def _plan_files_only(root: str, rel: str, m: Manifest, store: Store, statcache: StatCache,
                     todo: List[Todo]) -> Optional[str]:
    """A format-1 manifest (files only, executable or not): restored as before format 2;
    folders and links there are left, but never restored through."""
    files = [(f"{rel}/{f[0]}", f[1], plain_mode(bool(f[3]))) for f in m.files]
    replace: List[str] = []  # paths to move away first: never restored through
    base = os.path.join(root, rel)
    prefix = root if root.endswith("/") else root + "/"  # os.path.join(root, rel)
    try:
        mode: Optional[int] = os.lstat(base).st_mode
    except (OSError, ValueError):
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        expected = {f[0] for f in files}
        dead: List[str] = []
        links: List[str] = []
        todo.extend((f"{rel}/{inner}", REMOVE, None, rel)
                    for inner in _walk_files(base, dead, links)
                    if f"{rel}/{inner}" not in expected)
        for path in dead:  # a killed run's temp file: never a user's
            _unlink(path)
        # a symlink to a folder where the manifest has files: restoring them would write
        # through it (outside the folder, perhaps outside the project)
        replace.extend(f"{rel}/{link}" for link in links
                       if any(f[0].startswith(f"{rel}/{link}/") for f in files))
    elif mode is not None:  # a symlink (even to a folder) or a file: not followed
        replace.append(rel)
    if replace:  # restore() moves each to the trash (a link: the link, not its target)
        todo.extend((path, REMOVE, None, rel) for path in replace)
        gone = tuple(path + "/" for path in replace)
        for frel, digest, want in files:
            if frel in replace or frel.startswith(gone):
                if not store.has_blob(digest):
                    return f"output {frel} is changed and its stored copy is gone"
                todo.append((frel, digest, want, rel))
        files = [f for f in files if not (f[0] in replace or f[0].startswith(gone))]
    for frel, digest, want in files:
        full = prefix + frel
        current: Optional[str] = None
        try:
            current = _current(frel, full, os.stat(full), statcache)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            current = None
        if current == digest:
            continue
        if not store.has_blob(digest):
            what = "missing" if current is None else "changed"
            return f"output {frel} is {what} and its stored copy is gone"
        todo.append((frel, digest, want, rel))
    return None


def restore(root: str, todo: List[Todo], store: Store, statcache: StatCache,
            say: Optional[Callable[[str], None]] = None,
            entries: Iterable[Optional[ActionEntry]] = ()) -> None:
    """Carry out a plan_restore() plan. A file about to be overwritten or removed that is not
    zenbuild's own (at its path with bytes none of ``entries`` recorded there: a hand edit,
    a file the user added, a copy of one of the step's files) is moved to the trash first,
    and ``say`` (default: stderr) is told where it went. A folder a step made read-only is
    opened for the restore and given its mode back at the end."""
    trash = Trash(store, say, entries)
    checked: Dict[str, Set[str]] = {}  # an Output folder -> its parents seen to be real folders
    relaxed: Dict[str, int] = {}  # a folder made writable for the restore -> its mode before
    final: Set[str] = set()  # folders given their stored mode (CHMOD)
    for frel, op, arg, out in todo:
        full = os.path.join(root, frel)
        if frel != out:
            _no_link_on_the_way(root, out, frel, checked)
            _writable_parent(full, relaxed)
        if op == REMOVE:
            if not trash.keep_if_users(root, frel, statcache):
                _remove(full)
            statcache.forget([frel])
            checked.pop(out, None)
        elif op == MKDIR:
            _make_dir(full)
        elif op == CHMOD:
            st = os.lstat(full)
            if not stat.S_ISLNK(st.st_mode):  # never through a link
                os.chmod(full, arg)
                if stat.S_ISDIR(st.st_mode):
                    final.add(full)
                else:
                    statcache.forget([frel])  # its ctime moved: hashed again once
        elif op == LINK:
            if os.path.lexists(full) and not trash.keep_if_users(root, frel, statcache):
                _remove(full)
            _make_parents(full)  # (a folder Output holding only this link was never made)
            statcache.forget([frel])
            tmp = f"{full}{TMP_MARK}{os.getpid()}"
            _unlink(tmp)
            os.symlink(arg, tmp)
            os.replace(tmp, full)
        else:
            if os.path.isdir(full) and not os.path.islink(full):
                if not trash.keep_if_users(root, frel, statcache):
                    rmtree(full)
            elif os.path.lexists(full):
                trash.keep_if_users(root, frel, statcache)
            _make_parents(full)
            store.restore_file(op, full, arg, statcache)
            statcache.record(frel, full, op)
    for path, mode in relaxed.items():
        if path not in final:
            try:
                os.chmod(path, mode)
            except OSError:
                pass


def _no_link_on_the_way(root: str, out: str, frel: str, checked: Dict[str, Set[str]]) -> None:
    """Refuse (StoreError) a write at ``frel`` inside Output folder ``out`` that would go
    through a symbolic link: the folder itself or a folder inside it (one the user planted
    after the plan was made)."""
    base = os.path.join(root, out)
    seen = checked.get(out)
    if seen is None:
        try:
            if stat.S_ISLNK(os.lstat(base).st_mode):
                raise StoreError(f"Output {out} became a symbolic link while zenbuild restored "
                                 "it; nothing was written through it. Run again.")
        except FileNotFoundError:
            pass
        seen = checked[out] = set()
    link = link_below(base, frel[len(out) + 1:], seen)
    if link is not None:
        raise StoreError(f"{out}/{link} is not a folder (a symbolic link?) although the restore "
                         f"of {frel} needs one there; nothing was written through it. Run again.")


def _writable_parent(full: str, relaxed: Dict[str, int]) -> None:
    parent = os.path.dirname(full)
    try:
        st = os.lstat(parent)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode) and mode & stat.S_IRWXU != stat.S_IRWXU:
        relaxed.setdefault(parent, mode)
        os.chmod(parent, mode | stat.S_IRWXU)


def _make_dir(full: str) -> None:
    _make_parents(full)
    try:
        os.mkdir(full, 0o700)  # its mode is set last (CHMOD): the restore writes into it first
    except FileExistsError:
        if not os.path.isdir(full) or os.path.islink(full):
            raise StoreError(f"cannot make folder {full}: something else is there") from None


def _make_parents(full: str) -> None:
    """The folders above ``full``; StoreError when something not a folder (a dangling
    symlink, a file) stands on the way."""
    parent = os.path.dirname(full)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot make folder {parent} to restore {full} into: "
                         f"{e.strerror or e} ({e.filename or parent}); something that is not "
                         "a folder (a file, or a symbolic link to nowhere) is on the way. Move "
                         "it away, and run again.") from None


def _remove(full: str) -> None:
    try:
        if os.path.isdir(full) and not os.path.islink(full):
            rmtree(full)
        else:
            os.unlink(full)
    except FileNotFoundError:
        pass
