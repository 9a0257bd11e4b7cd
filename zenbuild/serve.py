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
from zenbuild.reasons import Reason
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.folders import parse, shape_items
from zenbuild.store.restoring import REMOVE, Todo, plan_restore, restore

RestorePlan = List[Todo]  # (path, what to do, its argument, the Output): restoring.Todo


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
        todo, problem = plan_restore(self.root, entry.outputs, self.store, self.statcache)
        if problem:
            return Reason(R.OUTPUT_UNUSABLE, after=problem)
        if todo:
            self._plans[entry.fingerprint] = todo
        return None

    def serve(self, entry: ActionEntry) -> Tuple[List[str], Optional[List[Reason]]]:
        """Put the entry's outputs back as usable() planned. Returns the paths restored and, in
        a dry run with something to restore, the reasons saying what a run would put back
        (None: the step is simply up to date)."""
        todo = self._plans.pop(entry.fingerprint, None) if self._plans else None
        if not todo:
            return [], None
        if not self.dry_run:
            restore(self.root, todo, self.store, self.statcache)
            return list(dict.fromkeys(t[0] for t in todo if t[1] != REMOVE)), None
        self._pretend_restored(entry, todo)
        shown = dict.fromkeys((rel, op == REMOVE) for rel, op, _, _ in todo)
        return [], [Reason(R.OUTPUT_REMOVE if gone else R.OUTPUT_RESTORE, rel)
                    for rel, gone in shown]

    def _pretend_restored(self, entry: ActionEntry, todo: RestorePlan) -> None:
        """Let downstream steps see the outputs a real run would restore (and not the files it
        would remove): per path, through the overlay; every other file keeps its stat cache."""
        over = self.overlay
        real: Dict[str, str] = {}  # an Output -> where the restore writes it (links followed)
        for rel in entry.outputs:
            parent, _, name = rel.rpartition("/")
            at = over.canonical(self.root, parent) if parent else "."
            real[rel] = (rel if at is None or os.path.isabs(at) or at == parent
                         else name if at == "." else f"{at}/{name}")
        for frel, op, _, out in todo:  # first, as the restore does: what it then makes stays
            if op == REMOVE:
                over.remove(real.get(out, out) + frel[len(out):])
        for out, rec in entry.outputs.items():
            rel = real[out]
            kind = rec.get("kind")
            if kind == "file":
                over.add_file(rel, rec["digest"], int(rec.get("size", 0)))
                continue
            try:
                blob = self.store.get_blob(rec["digest"])
                if kind == "link":  # what a reader sees is where it points (overlay.where)
                    over.add_link(rel, blob.decode("utf-8", "surrogateescape"))
                    continue
                m = parse(blob) if kind == "dir" else None
            except (KeyError, ValueError, TypeError, AttributeError, CorruptBlob):
                continue
            if m is None:
                continue
            if m.exact:  # the restore makes the folder exactly this: its shape is known
                over.add_folder(rel, ((f"{rel}/{p}", what) for p, what in shape_items(m)))
            for inner, digest, size, _ex in m.files:
                over.add_file(f"{rel}/{inner}", digest, int(size))
            for inner, target in m.links.items():  # read through: overlay.where follows it
                over.add_link(f"{rel}/{inner}", target)
