"""Outputs no call of a pipeline makes any more: what the latest entry of a call (node) that is
gone from the pipeline recorded at its Outputs is removed before the steps run, and what a
call's latest entry recorded at an Output the call no longer declares is removed before the
call is served or executed (each moved to the trash instead when the user changed it since),
so that no step reads a file no step makes any more, and an incremental run leaves what a
clean run would. A path another Output of the pipeline covers, or one of another pipeline's
latest entries, is left alone. A dry run removes nothing: it tells the overlay, so downstream
steps are judged on what the run would leave."""

from __future__ import annotations

import os
import stat
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.digest import StatCache
from zenbuild.events import Event, OutputRemoved, leftover_why
from zenbuild.overlay import OutputOverlay
from zenbuild.paths import parents
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.folders import rmtree
from zenbuild.store.outputs import Trash
from zenbuild.store.unstored import Unstored


class _Declared:
    """Project paths some Output covers: a path is taken when it is one of them, lies inside
    one (a folder Output), or holds one (a folder above a file Output)."""

    def __init__(self, outputs: Iterable[str]) -> None:
        self.at: Set[str] = set()
        self.above: Set[str] = set()
        for rel in outputs:
            self.at.add(rel)
            self.above.update(parents(rel)[1:])

    def takes(self, rel: str) -> bool:
        return rel in self.above or any(p in self.at for p in parents(rel))

    def names(self, rel: str) -> bool:
        """Whether ``rel`` is one of the paths or holds one (not: lies inside one)."""
        return rel in self.at or rel in self.above


class Leftovers:
    """What one run removes of what earlier runs of ``pipeline`` made: the Outputs of calls
    gone from it (vanished), or that a call no longer declares (undeclared). ``outputs``: every
    Output of the pipeline now; ``inputs``: its File/Dir inputs now (a leftover one of them
    names, or that holds one, stays: the user keeps a file a removed step made and reads it
    now; one inside a Dir input goes: a fan-out that shrank). Made only when something is
    left over. ``overlay``: a dry run's, told what would go instead (nothing changes on disk
    or in the store)."""

    def __init__(self, root: str, pipeline: str, outputs: Iterable[str], inputs: Iterable[str],
                 store: Store, statcache: StatCache, unstored: Unstored,
                 report: Callable[[Event], None], overlay: Optional[OutputOverlay] = None) -> None:
        self.root = root
        self.pipeline = pipeline
        self._ours = _Declared(outputs)
        self._inputs = _Declared(inputs)
        self.store = store
        self.statcache = statcache
        self.unstored = unstored
        self.report = report
        self.overlay = overlay
        self._others: Optional[_Declared] = None  # another pipeline's latest: asked if needed

    def vanished(self, gone: Dict[str, ActionEntry]) -> None:
        """The calls ``gone`` (step -> its latest entry) are no longer in the pipeline: remove
        what they left, and forget their latest entries (a call that comes back is served by
        its fingerprint, as any entry)."""
        self._remove(gone, undeclared=False)
        if self.overlay is None:
            self.store.drop_step_states(self.pipeline, gone)

    def undeclared(self, step: str, previous: ActionEntry) -> None:
        """Call ``step`` is about to be served or executed with other Outputs than its latest
        entry ``previous`` recorded: remove those no Output declares now."""
        self._remove({step: previous}, undeclared=True)

    def leftovers(self, gone: Dict[str, ActionEntry]) -> List[Tuple[str, str]]:
        """(Output, step) of the entries ``gone`` that no Output of the pipeline now, nor of
        another pipeline's latest entries, covers."""
        candidates = [(rel, step) for step, e in sorted(gone.items()) for rel in sorted(e.outputs)]
        if not candidates:
            return []
        ours, read = self._ours, self._inputs
        candidates = [(rel, step) for rel, step in candidates
                      if not ours.takes(rel) and not read.names(rel)]
        if not candidates:
            return []
        if self._others is None:
            self._others = _Declared(self.store.outputs_of_other_pipelines(self.pipeline))
        others = self._others
        return [(rel, step) for rel, step in candidates if not others.takes(rel)]

    def _remove(self, gone: Dict[str, ActionEntry], undeclared: bool) -> None:
        """Remove the leftovers() of ``gone``, each with a line. What is there that is not
        zenbuild's own (the bytes or target an entry recorded there, or what a step whose
        result was not stored left) goes to the trash instead, with the trash's line; a path
        nothing is at is passed over in silence."""
        root, overlay = self.root, self.overlay
        found = self.leftovers(gone)
        if not found:
            return
        trash = Trash(self.store, entries=gone.values())
        removed: List[str] = []
        for rel, step in found:
            full = os.path.join(root, rel)
            try:
                mode = os.lstat(full).st_mode
            except (OSError, ValueError):
                continue  # gone already (the user deleted it): nothing to do, nothing to say
            event = OutputRemoved(step=step, path=rel, pipeline=self.pipeline,
                                  undeclared=undeclared)
            removed.append(rel)
            if overlay is not None:
                event.users = not trash.zenbuilds(root, rel, self.statcache, self.unstored)
                event.would = True
                overlay.remove(rel)
                self.report(event)
                continue
            why = leftover_why(step, self.pipeline, undeclared)
            if trash.keep_if_users(root, rel, self.statcache, self.unstored,
                                   doing=f"before removing it ({why})"):
                continue  # moved away (the user's), with a line saying so
            if stat.S_ISDIR(mode):  # every file of it is zenbuild's own
                rmtree(full)
            else:  # zenbuild's own file, or link (removed, never followed)
                os.unlink(full)
            self.statcache.forget([rel])
            self.report(event)
        keep = self._ours.above | self._inputs.above | self._inputs.at
        _remove_emptied(root, removed, keep, overlay)


def _remove_emptied(root: str, removed: List[str], keep: Set[str],
                    overlay: Optional[OutputOverlay]) -> None:
    """Remove the folders that held only what was removed (made for those Outputs: a clean run
    has no such folder), deepest first, up to a folder still holding something or above a
    current Output (``keep``). A dry run tells the overlay instead."""
    if not removed:
        return
    gone = set(removed)
    folders = sorted({p for rel in removed for p in parents(rel)[1:] if p not in keep},
                     key=lambda p: -p.count("/"))
    for folder in folders:
        full = os.path.join(root, folder)
        try:
            if os.path.islink(full):
                continue
            names = os.listdir(full)
        except OSError:
            continue
        if any(f"{folder}/{n}" not in gone for n in names):
            continue
        if overlay is not None:
            overlay.remove(folder)
        else:
            try:
                os.rmdir(full)
            except OSError:
                continue
        gone.add(folder)
