"""Recording what a run did: a finished step's value and outputs captured into the store (one
group-committed transaction, then uploaded to the remote cache), the check that its inputs did
not change while it ran, and the run's bookkeeping written when the run ends."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from zenbuild import reasons as R
from zenbuild.digest import StatCache, digest_file
from zenbuild.discovered import Discovery, static_calls, static_files, with_types
from zenbuild.fingerprint.code import SourceCache
from zenbuild.graph import Node
from zenbuild.imported import changed_during_run
from zenbuild.paths import MissingInput, dir_files, glob_match
from zenbuild.reasons import Reason, pack, text
from zenbuild.rebuild import Components
from zenbuild.result import StepResult
from zenbuild.serialize import part_size
from zenbuild.states import StepStatus
from zenbuild.store.database import DiskFull, full_message
from zenbuild.store.db import TOUCH_EVERY_S, ActionEntry, Store
from zenbuild.store.folders import SpecialFile, rmtree
from zenbuild.store.outputs import (
    Claims,
    OutputMissing,
    Trash,
    capture,
    check_adopt,
    output_size,
    written_through_links,
)
from zenbuild.store.runs import StepRow
from zenbuild.store.unstored import Unstored
from zenbuild.trace import Trace

# Group commit: writes join one transaction, committed at most every COMMIT_EVERY_S (and at the
# end of the run). Each commit rewrites the touched B-tree pages into the WAL, so a commit per
# step cost ~18 page writes per step; a killed run loses at most the last fraction of a second
# of results, which then simply run again.
COMMIT_EVERY_S = 0.25


# A file's mtime comes from the kernel's coarse clock (a tick, ~4 ms), which can be behind
# the step's start as time.time_ns() read it: a write just after the start may look older.
COARSE_NS = 20_000_000


class CaptureFailed(Exception):
    """A step's result cannot be stored; the message says why and how to fix it."""


def _size(data: Any) -> int:
    """The size of a value's encoding: bytes, or its parts."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    try:
        return sum(part_size(p) for p in getattr(data, "parts", data))
    except TypeError:
        return 0


def reads_changed(root: str, step: str, trace: Trace,
                  declared: Dict[str, Any]) -> Optional[Reason]:
    """A file the step read without declaring it that was modified after the step started:
    what it read may not be what is there now, so its result is used but not cached."""
    for rel in trace.reads:
        if rel in declared:
            continue  # a declared input: inputs_changed() judged it
        try:
            mtime = os.stat(os.path.join(root, rel)).st_mtime_ns
        except OSError:
            continue
        if mtime >= trace.started_ns:
            return Reason(R.INPUT_CHANGED_DURING, rel, detail={"step": step})
    return None


def rewritten(step: str, trace: Optional[Trace],
              declared: Sequence[str] = ()) -> Optional[Reason]:
    """The step rewrote a file it had read (its own input: trace.rewrites): its result depends
    on what the file held before, which is gone now, so it is used but not cached.
    ``declared``: the step's File inputs (one it rewrote gets other advice: it may well be
    another step's Output)."""
    if trace is None or not trace.rewrites:
        return None
    first = trace.rewrites[0]
    detail: Dict[str, Any] = {"step": step, "more": len(trace.rewrites) - 1}
    if first in declared:
        detail["declared"] = True
    return Reason(R.INPUT_REWRITTEN, first, detail=detail)


def nondeterminism(components: Dict[str, Any], same: Optional[str],
                   value_digest: str) -> Dict[str, Any]:
    """An entry's components, marked when the step just returned another value than the stored
    entry with the same fingerprint (``same``): explain and status read the mark from it."""
    if same is not None and same != value_digest:
        components["not_deterministic"] = [same, value_digest]
    return components


class Recorder:
    """Writes a run's results into the store. ``clock`` is the monotonic clock that paces group
    commits; ``now`` the wall time of the run (for the entries' last use)."""

    def __init__(self, pipeline: str, root: str, store: Store, statcache: StatCache,
                 sources: SourceCache, remote: Any = None, now: Optional[float] = None,
                 clock: Callable[[], float] = time.perf_counter,
                 discovery: Optional[Discovery] = None) -> None:
        self.pipeline = pipeline
        self.root = root
        self.store = store
        self.statcache = statcache
        self.sources = sources
        self.remote = remote
        self.clock = clock
        self.discovery = discovery  # turns a step's Trace into the record its entry keeps
        self.now = time.time() if now is None else now
        self.hits: List[str] = []  # fingerprints served whose last use is worth updating
        self.state_updates: Dict[str, str] = {}  # step -> its latest fingerprint, if it moved
        self.promotions: List[Tuple[str, str]] = []  # (alternate served, its fingerprint)
        self.claims = Claims(store)
        self.unstored = Unstored(store)  # outputs of a step whose result could not be stored
        self._prefix = root if root.endswith("/") else root + "/"
        self.deferred: Optional[Exception] = None  # a full disk at the end: raise_deferred()
        self._last_commit = clock()
        self._static: Dict[int, Tuple[Any, Any]] = {}  # id(code_meta) -> (it, static_calls)
        self._last_static: Optional[Tuple[Any, Any]] = None  # the one _static_calls gave last
        # every Output of the pipeline (the scheduler sets it; asked only when needed)
        self.output_paths: Callable[[], Iterable[str]] = tuple

    def clear_outputs(self, node: Node, previous: Optional[ActionEntry]) -> None:
        """Before a step executes: refuse an Output that holds files zenbuild did not create
        (PathError: the step's first run would take them over), then make way for the step:
        what is at each Output the store has no copy of (a hand edit of a file, a file the
        user added or edited in a folder, a symlink the user put there) goes to the trash
        first, with a line saying where; then what is left there (zenbuild's own: what the
        step's latest entry recorded, see Trash) is removed, so the step starts clean: a
        step that does not write its Output this time fails, never passing off the file an
        earlier run left as its result, and a step may make a folder where a file was. A
        symlink at an Output is never followed: the link itself goes (to the trash unless its
        entry recorded it), its target is not touched."""
        known = previous.outputs if previous is not None else {}
        absent = check_adopt(self.root, node.name, list(node.outputs), known, self.store,
                             self.claims)
        trash: Optional[Trash] = None
        for rel in node.outputs:
            if rel in absent:  # check_adopt's lstat just saw nothing there
                continue
            full = os.path.join(self.root, rel)
            try:
                mode = os.lstat(full).st_mode
            except (OSError, ValueError):
                continue
            if trash is None:
                trash = Trash(self.store, entries=(previous,))
            if trash.keep_if_users(self.root, rel, self.statcache, self.unstored):
                continue  # moved away (the user's)
            if stat.S_ISDIR(mode):  # every file of it is zenbuild's own
                rmtree(full)  # (a folder the step made read-only too)
            else:  # zenbuild's own file, or link (removed, never written through)
                os.unlink(full)
            self.statcache.forget([rel])

    def served(self, name: str, fingerprint: str, entry: ActionEntry,
               previous: Optional[ActionEntry]) -> None:
        if entry.fingerprint != fingerprint:  # an alternate verified: it is the latest again
            self.promotions.append((entry.fingerprint, fingerprint))
        if self.now - entry.last_used > TOUCH_EVERY_S:
            self.hits.append(fingerprint)
        if previous is None or previous.fingerprint != fingerprint:
            self.state_updates[name] = fingerprint

    def record(self, node: Node, comps: Components, fingerprint: str, data: Any,
               duration: float, trace: Optional[Trace] = None,
               same: Optional[str] = None,
               stale: Optional[Reason] = None,
               types: Optional[List[List[Any]]] = None) -> Tuple[str, Optional[Reason]]:
        """Store a finished step's serialized value and its outputs, and its entry unless an
        input (declared, or read as its ``trace`` says) changed while it ran; the entry keeps
        what the trace saw, and ``types`` (the registered code that encoded the value:
        [module, qualname, code digest] each), to be verified before it is served. Returns
        (value digest, why it was not cached or None). Raises CaptureFailed."""
        name = node.name
        uncached: Optional[Reason] = None
        entry: Optional[ActionEntry] = None
        try:
            self.store.hold()
            with self.store.transaction():
                value_digest = self.store.put_value(data)  # bytes, or the value's buffers
                outputs: Dict[str, Dict[str, Any]] = {}
                special: Optional[Reason] = None
                links: Dict[str, Dict[str, str]] = {}  # links found in folder Outputs
                try:
                    for rel in node.outputs:
                        outputs[rel] = capture(self.root, rel, self.store, self.statcache,
                                               links)
                except SpecialFile as e:  # a fifo, a socket: the store cannot give it back
                    special = Reason(R.OUTPUT_SPECIAL, e.args[0], after=e.args[1],
                                     detail={"step": name})
                except OutputMissing as e:
                    self.unstored.add(self.root, node.outputs)
                    raise CaptureFailed(
                        f"step {name} declared Output({str(e)!r}) but did not write it. Write the "
                        "file (or folder) at the Path the step receives.") from None
                except OSError as e:  # unreadable (permissions, a symlink loop...)
                    self.unstored.add(self.root, node.outputs)
                    if e.errno == errno.ENOSPC:
                        raise CaptureFailed(f"step {name}: its output {rel} cannot be stored: "
                                            + full_message(self.store.path, f"a copy of {rel}",
                                                           output_size(self.root, rel))) from None
                    where = f" {e.filename!r}" if e.filename else ""
                    raise CaptureFailed(
                        f"step {name}: cannot store its output{where}: {e.strerror or e}") from None
                if links and trace is not None:  # what it wrote through a link out of its
                    through = written_through_links(  # Output folder, but not into an
                        self.root, links, trace.started_ns - COARSE_NS)  # Output (another
                    if through:  # step's, which that step writes and restores)
                        outs = set(self.output_paths())
                        below = tuple(o + "/" for o in outs)
                        through = [w for w in through if w not in outs and not w.startswith(below)]
                        trace.writes = sorted(set(trace.writes).union(through))
                uncached = (special or stale or rewritten(name, trace, [f.path for f in node.files])
                            or self.inputs_changed(node, comps)
                            or changed_during_run(self.root, name, comps.code_meta))
                discovered = None
                if uncached is None and trace is not None and trace.calls_displaced:
                    uncached = Reason(R.CALLS_DISPLACED, name)
                if uncached is None and trace is not None and self.discovery is not None:
                    uncached = reads_changed(self.root, node.name, trace, comps.files)
                    if uncached is None:
                        discovered = self.discovery.build(
                            trace, self._static_calls(comps.code_meta) if trace.calls else (),
                            comps.files,
                            static_files(comps.code_meta) if trace.modules else ())
                if uncached is None and types:
                    discovered = with_types(discovered, types)
                if uncached is not None:  # no entry records what it wrote: its next run
                    self.unstored.add(self.root, node.outputs)  # takes it back as its own
                if uncached is None:
                    if discovered is not None:  # the entry it replaces stays, as an alternate
                        self.store.demote_action(fingerprint, json.dumps(discovered, sort_keys=True))
                    entry = ActionEntry(fingerprint, self.pipeline, name, value_digest, outputs,
                                        nondeterminism(comps.to_json(), same, value_digest),
                                        created=self.now, duration=duration, discovered=discovered)
                    self.store.put_action(entry)
                    self.state_updates.pop(name, None)
            now = self.clock()
            if now - self._last_commit >= COMMIT_EVERY_S or self.remote is not None:
                self.store.release()
                self._last_commit = now
        except DiskFull as e:  # the database's disk: SQLite may have rolled back
            self.store.database.abandon()
            self.unstored.add(self.root, node.outputs)
            raise CaptureFailed(f"step {name}: its result cannot be stored: {e.message}") from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.unstored.add(self.root, node.outputs)
            raise CaptureFailed(f"step {name}: its result cannot be stored: " + full_message(
                e.filename or self.store.path, "its return value", _size(data))) from None
        if entry is not None and self.remote is not None:
            self.remote.upload(entry)
        return value_digest, uncached

    def _static_calls(self, code_meta: Dict[str, List[str]]) -> Any:
        """static_calls() of a step's code_meta, once per step function (every call of a step
        shares one code_meta dict in a run)."""
        got = self._last_static
        if got is None or got[0] is not code_meta:  # else the same step function: no id()
            got = self._static.get(id(code_meta))
            if got is None or got[0] is not code_meta:
                got = self._static[id(code_meta)] = (code_meta, static_calls(code_meta))
            self._last_static = got
        return got[1]

    def inputs_changed(self, node: Node, comps: Components) -> Optional[Reason]:
        """Why the result of a step that just ran must not be cached: an input file's content,
        or the set of files in an input folder, is not what its fingerprint was made from."""
        prefix = self._prefix
        for rel, key in comps.stats.items():
            full = prefix + rel  # os.path.join(root, rel): rel is project-relative
            try:
                st = os.stat(full)
                now: Optional[Tuple[int, int, int, int]] = (
                    st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)  # stat_key(st)
            except FileNotFoundError:
                now = None
            if now == key:
                continue
            self.statcache.forget([rel])
            if now is None or digest_file(full)[0] != comps.files[rel][0]:
                return Reason(R.INPUT_CHANGED_DURING, rel, detail={"step": node.name})
        for ref in node.files:
            if ref.is_dir:
                try:
                    now_files = set(dir_files(self.root, ref.path, ref.glob))
                except MissingInput:
                    now_files = set()
                base = "" if ref.path == "." else ref.path.rstrip("/") + "/"
                pattern = ref.glob or "**/*"
                before = {p for p in comps.files
                          if p.startswith(base) and glob_match(p[len(base):], pattern)}
                if now_files != before:
                    return Reason(R.DIR_CHANGED_DURING, ref.path, detail={"step": node.name})
        return None

    def persist(self, run_id: str, status: str, counts: Dict[str, int],
                results: Iterable[StepResult], log: str) -> None:
        """The end of a run, in one transaction: the stat cache, new source digests, entries'
        last use, the steps' latest fingerprints and the run's history row. A step's reasons
        are kept as text (what old readers show) and as records (kinds for scripts). A full
        disk is kept for raise_deferred(), so the run's summary is still shown first."""
        self.claims.close()  # no step starts after this
        try:
            self._persist(run_id, status, counts, results, log)
        except DiskFull as e:  # what was committed before stays; this last batch runs again
            self.store.database.abandon()
            self.deferred = e

    def raise_deferred(self) -> None:
        """Raise the error persist() kept (DiskFull: exit 1), if any."""
        if self.deferred is not None:
            e, self.deferred = self.deferred, None
            raise e

    def _persist(self, run_id: str, status: str, counts: Dict[str, int],
                 results: Iterable[StepResult], log: str) -> None:
        self.store.release()
        shown: Dict[int, Tuple[str, Any]] = {}  # id(reason) -> (text, packed): served steps
        steps: List[StepRow] = []  # share one up-to-date reason: a no-op renders it once
        for r in results:
            texts_: List[str] = []
            packed: List[Any] = []
            # an executed step's one reason is its own: not looked up (id() is an audit event)
            own = len(r.reasons) == 1 and r.status == StepStatus.EXECUTED
            for x in r.reasons:
                got = None if own else shown.get(id(x))
                if got is None:
                    got = (text(x), pack(x))
                    if not own:
                        shown[id(x)] = got
                texts_.append(got[0])
                packed.append(got[1])
            steps.append((r.name, r.status, r.fingerprint, r.duration, texts_, r.error, packed))
        with self.store.transaction():
            self.store.save_file_records(self.statcache.dirty)
            self.store.save_source_entries(self.sources.new)
            for alternate, fingerprint in self.promotions:
                self.store.promote_action(alternate, fingerprint)
            self.store.touch_actions(self.hits, self.now)
            self.store.set_step_states(self.pipeline, self.state_updates)
            self.store.finish_run(run_id, status, counts, steps, log)
            self.store.prune_runs()
        self.statcache.dirty = {}
