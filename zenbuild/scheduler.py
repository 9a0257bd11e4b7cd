"""Walks the graph in topological order, asks rebuild.decide() about each step, hands misses
to an executor, records results and emits events."""

from __future__ import annotations

import heapq
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from zenbuild.config import Config
from zenbuild.digest import StatCache, digest_file, stat_key
from zenbuild.errors import CorruptBlob
from zenbuild.events import (
    Reporter,
    RunFinished,
    RunStarted,
    StepCached,
    StepExecuting,
    StepFailed,
    StepFinished,
    StepSkipped,
    StepStarted,
    Warning_,
    WouldExecute,
)
from zenbuild.executors import Executor, Outcome, Task
from zenbuild.fingerprint.code import CodeFingerprinter, SourceCache
from zenbuild.graph import FileRef, Graph, InputRef, Node, OutputRef
from zenbuild.paths import MissingInput, dir_files
from zenbuild.rebuild import Components, Verdict, cache_policy, compute_components, decide
from zenbuild.records import field, record
from zenbuild.result import RunResult, StepResult
from zenbuild.serialize import dumps, loads
from zenbuild.store.db import TOUCH_EVERY_S, ActionEntry, Store
from zenbuild.store.outputs import OutputMissing, capture, plan_restore, restore

COMMIT_EVERY_S = 0.25


@record
class RunOptions:
    enable_cache: Optional[bool] = None  # the run-level override
    dry_run: bool = False
    explain: bool = False
    keep_going: bool = False
    targets: Optional[List[str]] = None
    params: Dict[str, Any] = field(default_factory=dict)
    all_reasons: bool = False  # collect every reason (explain/status), not just the first


class Scheduler:
    def __init__(
        self,
        graph: Graph,
        config: Config,
        store: Store,
        executor: Executor,
        reporter: Reporter,
        options: RunOptions,
        pipeline_enable_cache: Optional[bool] = None,
        log: Optional[List[str]] = None,
        remote: Any = None,
    ) -> None:
        self.g = graph
        self.remote = remote  # remote.RemoteCache or None (issue 5)
        self.root = config.root
        self.config = config
        self.store = store
        self.executor = executor
        self.report = reporter.handle
        self.opts = options
        self.pipeline_cache = pipeline_enable_cache
        self.log = log if log is not None else []
        self.statcache = StatCache(store.file_records())
        self.sources = SourceCache(self._source_digest, store.source_entry)
        self.fp = CodeFingerprinter(config.root, config.track_packages, config.store, self.sources)
        self.results: Dict[str, StepResult] = {}
        self.digests: Dict[str, str] = {}  # step -> value digest
        # Serialized values read or produced in this run. Each consumer gets its own decoded
        # copy, so a step that mutates its input cannot change what a sibling step sees.
        self.values: Dict[str, bytes] = {}
        self.hits: List[str] = []
        self.state_updates: Dict[str, str] = {}
        self.running: Dict[str, Tuple[Components, str, float]] = {}
        self._restore_plans: Dict[str, List[Tuple[str, str, bool]]] = {}
        self._last_commit = time.perf_counter()
        self._present: Set[str] = set()  # value blobs known to be in the store
        self._now = time.time()
        self._prefix = self.root.rstrip("/") + "/"

    def _source_digest(self, path: str) -> Optional[str]:
        """Content digest of a source file, through the stat cache (None if unreadable)."""
        try:
            rel = os.path.relpath(path, self.root)
            key = rel.replace(os.sep, "/") if not rel.startswith("..") else path
            return self.statcache.digest(key, path)[0]
        except (OSError, ValueError):
            return None

    # -- the decision --------------------------------------------------------------------------
    def _lookup(self, fingerprint: str) -> Optional[ActionEntry]:
        """The local store's entry for ``fingerprint``, else the remote cache's (copied in)."""
        entry = self.store.get_action(fingerprint)
        if entry is None and self.remote is not None:
            entry = self.remote.fetch(fingerprint)
        return entry

    def _usable(self, entry: ActionEntry) -> Optional[str]:
        if entry.value_digest not in self._present and not self.store.has_blob(entry.value_digest):
            return "the cached result is missing from the store"
        todo, problem = plan_restore(self.root, entry.outputs, self.store, self.statcache)
        if problem:
            return problem
        self._restore_plans[entry.fingerprint] = todo
        return None

    def _policy(self, node: Node) -> Any:
        st = self.config.step_settings(node.name, node.step.name)
        return cache_policy(
            node, self.opts.enable_cache, st.enable_cache if st else None, self.pipeline_cache
        )

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        wanted: Set[str] = (
            self.g.select(self.opts.targets) if self.opts.targets else set(self.g.order)
        )
        order = [n for n in self.g.order if n in wanted]
        states = self.store.step_states(self.g.pipeline)
        self._present = {e.value_digest for e in states.values() if e.value_inline}
        run_id = "dry-run" if self.opts.dry_run else self.store.begin_run(
            self.g.pipeline, self.opts.params
        )
        self.report(RunStarted(pipeline=self.g.pipeline, run_id=run_id, total=len(order)))
        pos = {n: i for i, n in enumerate(order)}
        waiting = {n: sum(1 for d in self.g.nodes[n].deps if d in wanted) for n in order}
        ready: List[Tuple[int, str]] = [(pos[n], n) for n in order if waiting[n] == 0]
        heapq.heapify(ready)
        stopped = False
        status = "interrupted"  # unless the walk below completes
        try:
            while ready or self.running:
                while ready and len(self.running) < max(1, self.executor.slots):
                    _, name = heapq.heappop(ready)
                    if stopped:
                        self._skip(name, self._upstream_problem(self.g.nodes[name])
                                   or "an earlier step failed")
                    else:
                        self._visit(self.g.nodes[name], states.get(name))
                    if name not in self.running:
                        self._release(name, waiting, ready, pos)
                if self.running:
                    for outcome in self.executor.wait():
                        ok = self._finish(outcome, states.get(outcome.name))
                        if not ok and not self.opts.keep_going:
                            stopped = True
                        self._release(outcome.name, waiting, ready, pos)
            failed = any(r.status == "failed" for r in self.results.values())
            status = "failed" if failed else "succeeded"
        finally:
            duration = time.perf_counter() - t0
            for r in self.results.values():
                if r.status == "running":  # interrupted while executing
                    r.status = "failed"
                    r.error = r.error or "interrupted"
            counts: Dict[str, int] = {}
            for r in self.results.values():
                counts[r.status] = counts.get(r.status, 0) + 1
            if not self.opts.dry_run:
                self._persist(run_id, status, counts)
        self.report(RunFinished(status=status, counts=counts, duration=duration))
        ordered = {n: self.results[n] for n in order if n in self.results}
        return RunResult(self.g.pipeline, run_id, status, ordered, duration)

    def _release(self, name: str, waiting: Dict[str, int], ready: List[Tuple[int, str]], pos: Dict[str, int]) -> None:
        for d in self.g.downstream[name]:
            if d in waiting:
                waiting[d] -= 1
                if waiting[d] == 0:
                    heapq.heappush(ready, (pos[d], d))

    def _skip(self, name: str, because: str) -> None:
        self.results[name] = StepResult(name, "skipped", reasons=[because], store_path=self.store.path)
        self.report(StepSkipped(step=name, because=because))

    def _fail(self, name: str, fp: Optional[str], message: str, duration: float = 0.0) -> None:
        self.results[name] = StepResult(
            name, "failed", fp, duration, error=message, store_path=self.store.path
        )
        self.report(StepFailed(step=name, duration=duration, error=message))

    def _upstream_problem(self, node: Node) -> Optional[str]:
        for d in node.deps:
            r = self.results.get(d)
            if r is not None and r.status in ("failed", "skipped"):
                return f"upstream step {d} {'failed' if r.status == 'failed' else 'was skipped'}"
        return None

    def _visit(self, node: Node, previous: Optional[ActionEntry]) -> None:
        name = node.name
        problem = self._upstream_problem(node)
        if problem:
            self._skip(name, problem)
            return
        for d in node.deps:
            r = self.results.get(d)
            if r is not None and r.status == "would_execute":
                reasons = [f"upstream step {d} would execute"]
                if self.opts.all_reasons:
                    reasons = self._reasons_after_pending(node, previous)
                self.results[name] = StepResult(name, "would_execute", reasons=reasons)
                self.report(WouldExecute(step=name, reasons=reasons))
                return
        try:
            comps = compute_components(node, self.root, self.fp, self.statcache, self.digests)
        except MissingInput as e:
            self.report(StepStarted(step=name))
            self._fail(name, None, f"{e}. Create it, or fix the path given to step {name}.")
            return
        fingerprint = comps.fingerprint()
        verdict: Verdict = decide(
            node, comps, fingerprint, self._policy(node), previous, self._lookup,
            self._usable, all_reasons=self.opts.all_reasons,
        )
        if not verdict.execute and verdict.entry is not None:
            self._serve(node, fingerprint, verdict.entry, previous)
            return
        if self.opts.dry_run:
            self.results[name] = StepResult(name, "would_execute", fingerprint, reasons=verdict.reasons)
            self.report(WouldExecute(step=name, reasons=verdict.reasons))
            return
        self._start(node, comps, fingerprint, verdict, previous)

    def _reasons_after_pending(self, node: Node, previous: Optional[ActionEntry]) -> List[str]:
        """Every reason (dry run, all_reasons) for a step whose upstream would execute: its own
        differences, judged by decide() against the upstream outputs it saw last time, then one
        reason per upstream step that would execute."""
        pending = [d for d in node.deps if d in self.results and self.results[d].status == "would_execute"]
        seen: Dict[str, str] = {}
        for ups in (previous.components.get("inputs", {}) if previous else {}).values():
            seen.update(ups)
        digests = {**{d: seen.get(d, "") for d in pending}, **self.digests}
        reasons: List[str] = []
        args: Dict[str, List[str]] = {}
        try:
            comps = compute_components(node, self.root, self.fp, self.statcache, digests)
            verdict = decide(node, comps, comps.fingerprint(), self._policy(node), previous,
                             self.store.get_action, self._usable, all_reasons=True)
            reasons = [r for r in verdict.reasons if r != "up to date"]
            for arg, ups in comps.inputs.items():
                for up in ups:
                    args.setdefault(up, []).append(arg)
        except MissingInput:
            pass  # a file an upstream step writes may not exist yet
        for d in pending:
            reasons.extend([f"input {a}: upstream step {d} would execute" for a in args[d]]
                           if d in args else [f"upstream step {d} would execute"])
        return reasons

    def _serve(self, node: Node, fingerprint: str, entry: ActionEntry, previous: Optional[ActionEntry]) -> None:
        name = node.name
        restored: List[str] = []
        todo = self._restore_plans.pop(fingerprint, [])
        if todo and not self.opts.dry_run:
            restore(self.root, todo, self.store, self.statcache)
            restored = [t[0] for t in todo if t[1]]
        self.digests[name] = entry.value_digest
        if self._now - entry.last_used > TOUCH_EVERY_S:
            self.hits.append(fingerprint)
        if previous is None or previous.fingerprint != fingerprint:
            self.state_updates[name] = fingerprint
        reasons = ["up to date"]
        if todo and self.opts.dry_run:  # say what a run would put back, without doing it
            self._pretend_restored(entry)
            reasons = [
                f"output {rel}: differs from the stored result; a run restores it" if digest
                else f"output {rel}: not made by this step; a run removes it"
                for rel, digest, _ in todo
            ]
        self.results[name] = StepResult(
            name, "cached", fingerprint, 0.0, reasons, entry.value_digest,
            store_path=self.store.path,
        )
        if not self.opts.dry_run:
            self.report(StepStarted(step=name))
        self.report(StepCached(step=name, restored=restored))

    def _pretend_restored(self, entry: ActionEntry) -> None:
        """In a dry run, let downstream steps see the outputs a real run would restore."""
        for rel, rec in entry.outputs.items():
            if rec.get("kind") == "file":
                self.statcache.overrides[rel] = (rec["digest"], int(rec.get("size", 0)))
                continue
            try:
                manifest = json.loads(self.store.get_blob(rec["digest"]))["files"]
            except (KeyError, ValueError, CorruptBlob):
                continue
            for inner, digest, size, _ex in manifest:
                self.statcache.overrides[f"{rel}/{inner}"] = (digest, int(size))

    def _value_of(self, name: str) -> Any:
        data = self.values.get(name)
        if data is None:
            digest = self.digests[name]
            try:
                data = self.store.get_blob(digest)
            except KeyError:
                raise CorruptBlob(digest) from None  # gone: purge the entries and run again
            self.values[name] = data
        return loads(data)

    def _resolve(self, v: Any) -> Any:
        if isinstance(v, InputRef):
            value = self._value_of(v.node)
            for key in v.path:
                value = value[key]
            return value
        if isinstance(v, FileRef):
            return Path(self._prefix + v.path)
        if isinstance(v, OutputRef):
            full = self._prefix + v.path
            parent = os.path.dirname(full)
            if not os.path.isdir(parent):  # a stat; mkdir of an existing folder costs more
                os.makedirs(parent, exist_ok=True)
            return Path(full)
        t = type(v)
        if t is list or t is tuple:
            return t(self._resolve(x) for x in v)
        if t is dict:
            return {k: self._resolve(x) for k, x in v.items()}
        return v

    def _start(self, node: Node, comps: Components, fingerprint: str, verdict: Verdict, previous: Optional[ActionEntry]) -> None:
        name = node.name
        if previous is not None:
            for rel, rec in previous.outputs.items():
                full = os.path.join(self.root, rel)
                if rec.get("kind") == "dir" and rel in node.outputs and os.path.isdir(full):
                    import shutil

                    shutil.rmtree(full)  # a folder this step produced before: start clean
        resolved = {k: self._resolve(v) for k, v in node.args.items()}
        call_args, call_kwargs = node.step.params.call_args(resolved)
        self.running[name] = (comps, fingerprint, time.perf_counter())
        self.report(StepStarted(step=name))
        self.report(StepExecuting(step=name, reasons=verdict.reasons))
        self.results[name] = StepResult(name, "running", fingerprint, reasons=verdict.reasons)
        self.executor.submit(Task(name, node.step.fn, call_args, call_kwargs))

    def _finish(self, outcome: Outcome, previous: Optional[ActionEntry]) -> bool:
        name = outcome.name
        comps, fingerprint, _ = self.running.pop(name)
        reasons = self.results[name].reasons
        if not outcome.ok:
            self._fail(name, fingerprint, outcome.error, outcome.duration)
            self.results[name].reasons = reasons
            return False
        node = self.g.nodes[name]
        try:
            data = dumps(outcome.value)
        except Exception as e:
            self._fail(name, fingerprint, f"the return value of step {name} cannot be stored: "
                       f"{type(e).__name__}: {e}. Return plain data or a picklable object.",
                       outcome.duration)
            return False
        outputs: Dict[str, Dict[str, Any]] = {}
        entry: Optional[ActionEntry] = None
        uncached = ""
        # Group commit: writes join one transaction, committed at most every COMMIT_EVERY_S
        # (and at the end of the run). Each commit rewrites the touched B-tree pages into
        # the WAL, so a commit per step cost ~18 page writes per step; a killed run loses at
        # most the last fraction of a second of results, which then simply run again.
        self.store.hold()
        with self.store.transaction():
            value_digest = self.store.put_blob(data)
            self.values[name] = data
            try:
                for rel in node.outputs:
                    outputs[rel] = capture(self.root, rel, self.store, self.statcache)
            except OutputMissing as e:
                self._fail(name, fingerprint, f"step {name} declared Output({str(e)!r}) but did "
                           "not write it. Write the file (or folder) at the Path the step "
                           "receives.", outcome.duration)
                return False
            except OSError as e:  # unreadable (permissions, a symlink loop...)
                where = f" {e.filename!r}" if e.filename else ""
                self._fail(name, fingerprint, f"step {name}: cannot store its output{where}: "
                           f"{e.strerror or e}", outcome.duration)
                return False
            uncached = self._inputs_changed(node, comps)
            if not uncached:
                entry = ActionEntry(
                    fingerprint, self.g.pipeline, name, value_digest, outputs, comps.to_json(),
                    duration=outcome.duration,
                )
                self.store.put_action(entry)
                self.state_updates.pop(name, None)
        now = time.perf_counter()
        if now - self._last_commit >= COMMIT_EVERY_S or self.remote is not None:
            self.store.release()
            self._last_commit = now
        if entry is not None and self.remote is not None:
            self.remote.upload(entry)
        self.digests[name] = value_digest
        self.results[name] = StepResult(
            name, "executed", fingerprint, outcome.duration, reasons, value_digest,
            store_path=self.store.path,
        )
        self.report(StepFinished(step=name, duration=outcome.duration, uncached_reason=uncached))
        return True

    def _inputs_changed(self, node: Node, comps: Components) -> str:
        for rel, key in comps.stats.items():
            full = os.path.join(self.root, rel)
            try:
                now = stat_key(os.stat(full))
            except FileNotFoundError:
                now = None
            if now == key:
                continue
            self.statcache.forget([rel])
            changed = now is None or digest_file(full)[0] != comps.files[rel][0]
            if changed:
                return (f"input {rel} changed while step {node.name} ran; "
                        "its result was used but not cached")
        for ref in node.files:
            if ref.is_dir:
                try:
                    now_files = set(dir_files(self.root, ref.path, ref.glob))
                except MissingInput:
                    now_files = set()
                before = {p for p in comps.files if p == ref.path or p.startswith(ref.path.rstrip("/") + "/") or ref.path == "."}
                if now_files != before:
                    return (f"input folder {ref.path} changed while step {node.name} ran; "
                            "its result was used but not cached")
        return ""

    def _persist(self, run_id: str, status: str, counts: Dict[str, int]) -> None:
        self.store.release()
        steps = [
            (r.name, r.status, r.fingerprint, r.duration, r.reasons, r.error)
            for r in self.results.values()
        ]
        with self.store.transaction():
            self.store.save_file_records(self.statcache.dirty)
            self.store.save_source_entries(self.sources.new)
            self.store.touch_actions(self.hits, self._now)
            self.store.set_step_states(self.g.pipeline, self.state_updates)
            self.store.finish_run(run_id, status, counts, steps, "\n".join(self.log))
            self.store.prune_runs()
        self.statcache.dirty = {}

    def warn(self, message: str) -> None:
        self.report(Warning_(message=message))
