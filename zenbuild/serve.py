"""Serving a step from the cache: finding its entry (the local store, then the remote cache),
judging whether the entry can be served, putting its outputs back on disk, and, in a dry run,
the overlay that shows downstream steps the outputs a real run would have put back."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Set, Tuple

from zenbuild import reasons as R
from zenbuild.digest import StatCache
from zenbuild.errors import CorruptBlob
from zenbuild.overlay import OutputOverlay
from zenbuild.paths import parents
from zenbuild.reasons import Reason
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.folders import parse, shape_items
from zenbuild.store.restoring import CHMOD, LINK, MKDIR, REMOVE, Todo, plan_restore, restore

RestorePlan = List[Todo]  # (path, what to do, its argument, the Output): restoring.Todo


class RestoreFailed(Exception):
    """Putting an entry's outputs back failed on this machine (a name too long, no space, no
    permission): the step executes instead. ``args[0]``: the path and the error, for people."""


def _failure(e: OSError) -> str:
    where = e.filename if isinstance(e.filename, str) else "an output"
    return f"{where[:300]}: {e.strerror or e}"


class Server:
    """Answers decide()'s questions about entries (``lookup``, ``usable``) and serves them.
    In a dry run nothing on disk changes: ``overlay`` records what a run would restore."""

    def __init__(self, root: str, store: Store, statcache: StatCache, remote: Any = None,
                 dry_run: bool = False) -> None:
        self.root = root
        self.store = store
        self.statcache = statcache
        self.remote = remote  # remote.RemoteCache or None
        self.dry_run = dry_run
        self.overlay = OutputOverlay()
        self.present: Set[str] = set()  # value blobs known to be in the store
        self._plans: Dict[str, RestorePlan] = {}  # fingerprint -> what serving it restores

    def lookup(self, fingerprint: str, outputs: Optional[List[str]] = None) -> Optional[ActionEntry]:
        """The local store's entry for ``fingerprint``, else the remote cache's (copied in once
        it names exactly the step's declared ``outputs``: store/signing.py)."""
        entry = self.store.get_action(fingerprint)
        if entry is None and self.remote is not None:
            entry = self.remote.fetch(fingerprint, outputs, self.root)
        return entry

    def usable(self, entry: ActionEntry) -> Optional[Reason]:
        """Why ``entry`` cannot be served, or None (then its restore plan is kept for serve)."""
        if entry.value_digest not in self.present and not self.store.has_blob(entry.value_digest):
            return Reason(R.BLOB_MISSING)
        try:
            todo, problem = plan_restore(self.root, entry.outputs, self.store, self.statcache)
        except OSError as e:  # looking at what is on disk failed (a name too long...)
            todo, problem = [], f"cannot restore {_failure(e)}"
        if problem:
            return Reason(R.OUTPUT_UNUSABLE, after=problem)
        if todo:
            self._plans[entry.fingerprint] = todo
        return None

    def serve(self, entry: ActionEntry, previous: Optional[ActionEntry] = None
              ) -> Tuple[List[str], Optional[List[Reason]]]:
        """Put the entry's outputs back as usable() planned (``previous``: the step's latest
        entry, whose outputs are zenbuild's own where they still are). Returns the paths
        restored and, in a dry run with something to restore, the reasons saying what a run
        would put back (None: the step is simply up to date)."""
        todo = self._plans.pop(entry.fingerprint, None) if self._plans else None
        if not todo:
            return [], None
        if not self.dry_run:
            try:
                restore(self.root, todo, self.store, self.statcache, entries=(entry, previous))
            except OSError as e:
                raise RestoreFailed(_failure(e)) from None
            return _restored(todo), None
        self._pretend_restored(entry, todo)
        shown = dict.fromkeys((rel, op == REMOVE) for rel, op, _, _ in todo)
        return [], [Reason(R.OUTPUT_REMOVE if gone else R.OUTPUT_RESTORE, rel)
                    for rel, gone in shown]

    def _pretend_restored(self, entry: ActionEntry, todo: RestorePlan) -> None:
        """Let downstream steps see what a real run would restore (and not what it would
        remove): the restore plan's steps, through the overlay, at the paths the restore
        writes (an Output's folder through a link is where the link leads); every other
        file keeps its stat cache."""
        over = self.overlay
        real: Dict[str, str] = {}  # an Output -> where the restore writes it (links followed)
        sizes: Dict[str, int] = {}  # a file it may write -> its size
        for rel, rec in entry.outputs.items():
            parent, _, name = rel.rpartition("/")
            at = over.canonical(self.root, parent) if parent else "."
            out = real[rel] = (rel if at is None or os.path.isabs(at) or at == parent
                               else name if at == "." else f"{at}/{name}")
            kind = rec.get("kind")
            if kind == "file":
                sizes[rel] = int(rec.get("size", 0))
            elif kind == "dir":
                try:
                    m = parse(self.store.get_blob(rec["digest"]))
                except (KeyError, ValueError, TypeError, AttributeError, CorruptBlob):
                    continue
                for inner, _digest, size, _ex in m.files:
                    sizes[f"{rel}/{inner}"] = int(size)
                if m.exact:  # what a Dir over it holds besides bytes: the manifest says
                    empty = not (m.files or m.links or m.dirs)
                    over.shape_folder(out, [(f"{out}/{p}", what) for p, what in shape_items(m)]
                                      + ([(out, "empty")] if empty else []))
        for frel, op, arg, rel in todo:
            path = real.get(rel, rel) + frel[len(rel):]
            if op == REMOVE:
                over.remove(path)
            elif op == MKDIR:
                over.add_dir(path)
            elif op == LINK:
                over.add_link(path, arg)
            elif op != CHMOD:  # a file: ``op`` is its digest
                over.add_file(path, op, sizes.get(frel, 0))


def _restored(todo: RestorePlan) -> List[str]:
    """The paths a restore put back, for the "Restored" lines: a folder it made or gave its
    mode is not named when something inside it is."""
    paths = list(dict.fromkeys(t[0] for t in todo if t[1] != REMOVE))
    folders = {t[0] for t in todo if t[1] in (MKDIR, CHMOD)}
    if not folders:
        return paths
    inside = {parent for p in paths for parent in parents(p)[1:]}
    return [p for p in paths if p not in folders or p not in inside]
