"""The walk: steps in topological order, each judged by rebuild.decide(), served through
serve.Server or handed to an executor, its result recorded by commit.Recorder, every state
change reported as an event. A dry run walks the same way and changes nothing on disk."""

from __future__ import annotations

import heapq
import os
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild import reasons as R
from zenbuild.commit import CaptureFailed, Recorder
from zenbuild.config import Config
from zenbuild.digest import StatCache
from zenbuild.discovered import Discovery
from zenbuild.durations import now as wall_now
from zenbuild.errors import CorruptBlob, ParamError
from zenbuild.events import (
    Reporter,
    RunFinished,
    RunStarted,
    StepCached,
    StepErrored,
    StepExecuting,
    StepFinished,
    StepSkipped,
    StepStarted,
    Warning_,
    WouldExecute,
)
from zenbuild.executors import Executor, Outcome, Task, user_traceback_text
from zenbuild.fingerprint.code import CodeFingerprinter, SourceCache
from zenbuild.fingerprint.encoders import TypeDigests, encoder_record, find_class
from zenbuild.fingerprint.subclasses import SubclassDigests
from zenbuild.fingerprint.traced import ClosureDigests
from zenbuild.fingerprint.values import loaded_object
from zenbuild.graph import EnvRef, FileRef, Graph, InputRef, Node, OutputRef
from zenbuild.paths import MissingInput, PathMaker, shown
from zenbuild.policy import (
    EnvInputs,
    check_rerun_selected,
    named_steps,
    probe_runs,
    probe_version,
    probe_versions,
)
from zenbuild.reasons import REFRESH_KINDS, Reason
from zenbuild.rebuild import (
    NO_VERSION,
    CachePolicy,
    Components,
    cache_policy,
    compute_components,
    decide,
    element_key,
)
from zenbuild.records import field, record
from zenbuild.result import RunResult, StepResult
from zenbuild.serialize import MAGIC as CANONICAL_MAGIC
from zenbuild.serialize import Unstable, loads, value_digest
from zenbuild.serialize.buffers import INLINE_KEEP, encode_value
from zenbuild.serve import RestoreFailed, Server
from zenbuild.states import StepStatus
from zenbuild.store.blobs import StoredValue
from zenbuild.store.db import ActionEntry, Store
from zenbuild.trace import Recorder as TraceRecorder
from zenbuild.trace import Trace, TraceOptions, merge_into

EXECUTED, CACHED, FAILED = StepStatus.EXECUTED, StepStatus.CACHED, StepStatus.FAILED
SKIPPED, RUNNING, WOULD = StepStatus.SKIPPED, StepStatus.RUNNING, StepStatus.WOULD_EXECUTE


class _NoOutputFolder(Exception):
    """The folder of an Output cannot be made (a file stands where a folder of its path
    would be, made after the run's placement check): the step fails, saying so."""


class _Unloadable(Exception):
    """A value that does not decode, for a reason running its producer again cannot fix."""

    def __init__(self, producer: str, error: BaseException) -> None:
        super().__init__(producer)
        self.producer = producer
        self.error = error


@record
class RunOptions:
    enable_cache: Optional[bool] = None  # the run-level override
    dry_run: bool = False
    explain: bool = False
    keep_going: bool = False
    targets: Optional[List[str]] = None
    params: Dict[str, Any] = field(default_factory=dict)
    all_reasons: bool = False  # collect every reason (explain/status), not just the first
    rerun: Optional[List[str]] = None  # steps to execute even if cached (run --rerun)
    now: Optional[float] = None  # the wall time cached results are aged by (None: the clock)


def _source_digest(statcache: StatCache, root: str) -> Callable[[str], Optional[str]]:
    """Content digest of a source file, through the stat cache (None if unreadable)."""

    def digest(path: str) -> Optional[str]:
        try:
            return statcache.digest(shown(path, root), path)[0]
        except (OSError, ValueError):
            return None

    return digest


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
        self.root = config.root
        self.config = config
        self.store = store
        self.executor = executor
        self.report = reporter.handle
        self.opts = options
        self.pipeline_cache = pipeline_enable_cache
        self.log = log if log is not None else []
        self.statcache = StatCache(store.file_records())
        # not a bound method: a scheduler in a reference cycle (with its graph, stat cache and
        # results) is freed only by the cyclic GC, which a run of 5,000 steps paid ~50-100 ms for
        self.sources = SourceCache(_source_digest(self.statcache, self.root), store.source_entry)
        self.fp = CodeFingerprinter(config.root, config.track_packages, config.store, self.sources,
                                    tuple(config.ignore_env))
        self.fp.entry_module = getattr(graph, "entry_module", "")
        self.server = Server(self.root, store, self.statcache, remote, options.dry_run)
        self.now = wall_now(options.now)  # entries are aged by it (and made at it)
        self.rerun = named_steps(graph, options.rerun, "--rerun") if options.rerun else set()
        self.env_inputs = EnvInputs(config.store)
        self.env_values: Dict[str, Dict[str, str]] = {}  # step -> its Env() values
        self.probe_errors: Dict[str, str] = {}  # step -> why its version probe failed
        self.probed: Dict[str, Tuple[Any, Optional[str]]] = {}  # probes run together at start
        self.env_read: Dict[str, Tuple[Dict[str, Any], Dict[str, str]]] = {}  # ... their Env()s
        # what steps touch while they run: recorded by the executors, stored and verified here
        self.discovery = Discovery(self.root, self.statcache, config.ignore_env, store=config.store,
                                   type_digest=TypeDigests(self.fp))
        self.discovery.closure_digest = ClosureDigests(self.fp, config.root)  # traced calls
        self.discovery.subclasses = SubclassDigests(self.fp, config.root, config.store)
        if options.dry_run:  # judged on what the run would restore, as a real run is
            self.discovery.overlay = self.server.overlay
        self.recorder = Recorder(graph.pipeline, self.root, store, self.statcache, self.sources,
                                 remote, now=self.now, discovery=self.discovery)
        self.recorder.output_paths = lambda: [o for n in graph.nodes.values() for o in n.outputs]
        self.results: Dict[str, StepResult] = {}
        self.digests: Dict[str, str] = {}  # step -> value digest
        self.indexed = graph.indexed  # step -> item paths its consumers read it by
        self.elements: Dict[str, Dict[str, str]] = {}  # ... and those elements' digests
        # Small serialized values read or produced in this run. Each consumer gets its own
        # decoded copy, so a step that mutates its input cannot change what a sibling step
        # sees; a bigger value is mapped copy-on-write from its blob for each consumer (O(1),
        # the same isolation: each mapping has private pages).
        self.values: Dict[str, bytes] = {}
        # while a traced step's arguments are resolved: its trace options and what decoding a
        # value that may run project code (a value type's load(), a class's __setstate__)
        # touched; then step -> those traces, added to the step's own when it finishes
        self._decoding: Optional[Tuple[TraceOptions, List[Trace]]] = None
        self._decoded: Dict[str, List[Trace]] = {}
        # blobs workers wrote for values this process encoded again (they name project code)
        self.replaced: List[str] = []
        # step -> (components, fingerprint, start, value digest of the stored entry with the
        # same fingerprint: executing again, a deterministic step returns the same value)
        self.running: Dict[str, Tuple[Components, str, float, Optional[str]]] = {}
        self._prefix = self.root.rstrip("/") + "/"
        self._unhappy = 0  # steps failed or skipped so far (_upstream_problem looks only then)
        self._path = PathMaker(self.root)  # Path(root/rel) for the files steps receive
        self._left: Any = None  # vanished.Leftovers, once something is left over

    def _policy(self, node: Node) -> CachePolicy:
        st = self.config.step_settings(node.name, node.step.name)
        policy = cache_policy(
            node, self.opts.enable_cache, st.enable_cache if st else None, self.pipeline_cache,
            node.name in self.rerun, st.cache_expires_after if st else None, self.now,
            st.enable_cache_from if st else "",
        )
        if node.name in self.probe_errors:
            policy.probe_error = self.probe_errors[node.name]
        return policy

    def _controls(self, node: Node) -> Tuple[Dict[str, Any], Any]:
        """(Env components, version) of ``node``: its Env() values are read (and kept for the
        step) and its version probe called, on every run, before it is judged. A probe that
        raises is warned about once; the step then executes."""
        if not node.envs and node.step.version is None:  # most steps: nothing to read
            return {}, NO_VERSION
        envs: Dict[str, Any] = {}
        if node.envs:
            read = self.env_read.pop(node.name, None)  # read already by _probe_early
            envs, self.env_values[node.name] = read or self.env_inputs.read(node)
        version: Any = NO_VERSION
        if probe_runs(node):
            early = self.probed.pop(node.name, None)  # run with the others at the start
            version, error = early if early is not None else probe_version(
                node, self.root, self.env_values.get(node.name, {}))
            if error is not None:
                self.probe_errors[node.name] = error
                self.report(Warning_(message=f"the version probe of step {node.name} failed: "
                                     f"{error}; the step executes"))
        return envs, version

    def _probe_early(self, nodes: List[Node]) -> None:
        """Two or more version probes: run them all at once before the walk (each step still
        warns about its own failure when it is judged)."""
        probed = [n for n in nodes if probe_runs(n)]
        if len(probed) < 2:
            return
        for n in probed:
            if n.envs:
                try:
                    read = self.env_read[n.name] = self.env_inputs.read(n)
                except ParamError:
                    continue  # unset Env(): said when the step is visited
                self.env_values[n.name] = read[1]
        self.probed = probe_versions(
            probed, self.root, {n.name: self.env_values.get(n.name, {}) for n in probed
                                if not n.envs or n.name in self.env_values})

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        wanted: Set[str] = (
            self.g.select(named_steps(self.g, self.opts.targets, "--step"))
            if self.opts.targets else set(self.g.order)
        )
        if self.opts.targets and self.opts.rerun:  # a rerun the selection leaves out: refused
            check_rerun_selected(self.g, self.opts.rerun, self.opts.targets)
        order = [n for n in self.g.order if n in wanted]
        if not self.opts.dry_run:  # a dry run (explain, status) says which step cannot run
            self.env_inputs.check_set(self.g.nodes[n] for n in order)
        self._probe_early([self.g.nodes[n] for n in order])
        states = self.store.step_states(self.g.pipeline)
        self.server.present = {e.value_digest for e in states.values() if e.value_inline}
        run_id = "dry-run" if self.opts.dry_run else self.store.begin_run(
            self.g.pipeline, self.opts.params
        )
        self.report(RunStarted(pipeline=self.g.pipeline, run_id=run_id, total=len(order)))
        pos = {n: i for i, n in enumerate(order)}
        nodes = self.g.nodes
        waiting = ({n: sum(1 for d in nodes[n].deps if d in wanted) for n in order}
                   if self.opts.targets else {n: len(nodes[n].deps) for n in order})  # all wanted
        ready: List[Tuple[int, str]] = [(pos[n], n) for n in order if waiting[n] == 0]
        heapq.heapify(ready)
        stopped = False
        status = "interrupted"  # unless the walk below completes
        counts: Dict[str, int] = {}
        try:
            if states.keys() != nodes.keys():  # (a no-op: the same calls as last time)
                self._vanished(states)
            while ready or self.running:
                while ready and len(self.running) < max(1, self.executor.slots):
                    _, name = heapq.heappop(ready)
                    if stopped:
                        self._skip(name, self._upstream_problem(self.g.nodes[name])
                                   or Reason(R.EARLIER_FAILED))
                    else:
                        self._visit(self.g.nodes[name], states.get(name))
                    if name not in self.running:
                        self._release(name, waiting, ready, pos)
                if self.running:
                    for outcome in self.executor.wait():
                        ok = self._finish(outcome)
                        if not ok and not self.opts.keep_going:
                            stopped = True
                        self._release(outcome.name, waiting, ready, pos)
            self._drop_replaced()
            failed = any(r.status == FAILED for r in self.results.values())
            status = "failed" if failed else "succeeded"
        finally:
            duration = time.perf_counter() - t0
            self.discovery.close()  # a dry run's mirror
            for r in self.results.values():
                if r.status == RUNNING:  # interrupted while executing
                    r.status = FAILED
                    r.error = r.error or "interrupted"
            for r in self.results.values():
                counts[r.status] = counts.get(r.status, 0) + 1
            if not self.opts.dry_run:
                self.recorder.persist(run_id, status, counts, self.results.values(),
                                      "\n".join(self.log))
        self.report(RunFinished(status=status, counts=counts, duration=duration))
        self.recorder.raise_deferred()  # a full disk while recording the run: exit 1
        ordered = {n: self.results[n] for n in order if n in self.results}
        return RunResult(self.g.pipeline, run_id, status, ordered, duration)

    def _leftovers(self) -> Any:
        """The run's vanished.Leftovers (made when first needed)."""
        if self._left is None:
            from zenbuild.vanished import Leftovers

            nodes = self.g.nodes.values()
            self._left = Leftovers(
                self.root, self.g.pipeline, [o for n in nodes for o in n.outputs],
                [f.path for n in nodes for f in n.files], self.store, self.statcache,
                self.recorder.unstored, self.report,
                self.server.overlay if self.opts.dry_run else None)
        return self._left

    def _vanished(self, states: Dict[str, ActionEntry]) -> None:
        """Before any step: the Outputs of the calls an earlier run of the pipeline made that
        it no longer makes go (vanished.py), so no step sees what no step makes now."""
        nodes = self.g.nodes
        gone = {n: e for n, e in states.items() if n not in nodes}
        if gone:
            self._leftovers().vanished(gone)

    def _undeclared(self, node: Node, previous: Optional[ActionEntry]) -> None:
        """Before ``node`` is served or executed: the Outputs its latest entry recorded that it
        no longer declares go (asked only when its key changed: its Output paths are in it)."""
        if previous is not None and previous.outputs:
            outs = node.outputs
            if any(rel not in outs for rel in previous.outputs):
                self._leftovers().undeclared(node.name, previous)

    def _drop_replaced(self) -> None:
        """Once every task is done, delete the blobs workers wrote for values this process
        encoded again (a value naming project code carries their code digests, which a
        worker cannot know), unless an entry uses one after all. Not sooner: another task's
        worker may have found the same blob in place and not written its own."""
        for digest in dict.fromkeys(self.replaced):
            if digest not in self.digests.values() and not self.store.actions_using(digest):
                self.store.delete_blob(digest)
        self.replaced.clear()

    def _release(self, name: str, waiting: Dict[str, int], ready: List[Tuple[int, str]],
                 pos: Dict[str, int]) -> None:
        for d in self.g.downstream[name]:
            if d in waiting:
                waiting[d] -= 1
                if waiting[d] == 0:
                    heapq.heappush(ready, (pos[d], d))

    def _skip(self, name: str, because: Reason) -> None:
        self._unhappy += 1
        self.results[name] = StepResult(name, SKIPPED, reasons=[because],
                                        store_path=self.store.path)
        self.report(StepSkipped(step=name, because=because))

    def _project_traceback(self, e: BaseException) -> str:
        """When the project's own code raised ``e`` while the value was stored (a value type's
        save(), a registered reducer, a __reduce__ or __getstate__ of its class): where, as
        the traceback without zenbuild's frames; else nothing."""
        if not self._raised_in_project(e):
            return ""
        from zenbuild.executors import user_traceback_text

        # (not chained: the exceptions before it are the encoder's own tries)
        return "\n" + user_traceback_text(e, chain=False).rstrip("\n")

    def _fail(self, name: str, fp: Optional[str], message: str, duration: float = 0.0,
              reasons: Optional[List[Reason]] = None) -> None:
        self._unhappy += 1
        self.results[name] = StepResult(name, FAILED, fp, duration, reasons or [],
                                        error=message, store_path=self.store.path)
        self.report(StepErrored(step=name, duration=duration, error=message))

    def _upstream_problem(self, node: Node) -> Optional[Reason]:
        if not self._unhappy:  # no step failed or was skipped yet (most runs, every no-op)
            return None
        for d in node.deps:
            r = self.results.get(d)
            if r is not None and r.status in (FAILED, SKIPPED):
                return Reason(R.UPSTREAM_FAILED if r.status == FAILED else R.UPSTREAM_SKIPPED, d)
        return None

    def _visit(self, node: Node, previous: Optional[ActionEntry]) -> None:
        name = node.name
        problem = self._upstream_problem(node)
        if problem:
            self._skip(name, problem)
            return
        if self.opts.dry_run:  # only a dry run has steps that would execute
            results = self.results
            pending = [d for d in node.deps if d in results and results[d].status == WOULD]
            if pending:
                self._visit_pending(node, previous, pending)
                return
        try:
            envs, version = self._controls(node)
        except ParamError as e:  # an Env() not set: only a dry run gets here (run checks first)
            self.report(StepStarted(step=name))
            self._fail(name, None, e.message)
            return
        try:
            comps = compute_components(node, self.root, self.fp, self.statcache, self.digests,
                                       self.server.overlay, self.elements, envs, version)
        except MissingInput as e:
            self.report(StepStarted(step=name))
            self._fail(name, None, f"{e}. Create it, or fix the path given to step {name}.")
            return
        fingerprint = comps.fingerprint()
        if previous is not None and previous.fingerprint != fingerprint:
            self._undeclared(node, previous)
        policy = self._policy(node)
        verdict = decide(
            node, comps, fingerprint, policy, previous, self._lookup(node),
            self.server.usable, all_reasons=self.opts.all_reasons,
            verify=self.discovery.verify, alternates=self.store.alternate_actions,
        )
        reasons = verdict.reasons
        if not verdict.execute and verdict.entry is not None:
            try:
                self._serve(node, fingerprint, verdict.entry, previous)
                return
            except RestoreFailed as e:  # as for a missing blob: the step executes instead
                self.report(Warning_(message=f"could not restore the outputs of step {name} "
                                             f"from the store ({e.args[0]}); executing it"))
                reasons = [Reason(R.OUTPUT_UNUSABLE, after=f"restoring it failed: {e.args[0]}")]
        if self.opts.dry_run:
            self.results[name] = StepResult(name, WOULD, fingerprint, reasons=verdict.reasons)
            self.report(WouldExecute(step=name, reasons=verdict.reasons))
        else:
            same = verdict.entry.value_digest if verdict.entry is not None else None
            if any(r.kind in REFRESH_KINDS for r in reasons):
                same = None  # executed for fresh external state: a new value is expected
            self._start(node, comps, fingerprint, reasons, previous, same,
                        traced=not policy.no_cache)  # --no-cache still stores entries

    def _lookup(self, node: Node) -> Callable[[str], Optional[ActionEntry]]:
        """Entries by fingerprint for ``node``: a remote one must name its declared outputs."""
        return lambda fingerprint: self.server.lookup(fingerprint, node.outputs)

    def _visit_pending(self, node: Node, previous: Optional[ActionEntry],
                       pending: List[str]) -> None:
        """A dry run's step whose upstream step would execute. decide() says so; asked for
        every reason, it first compares the rest of the step, with the upstream outputs the
        step saw last time standing in for the ones not made yet."""
        comps: Optional[Components] = None
        fingerprint = ""
        self._undeclared(node, previous)  # (a dry run: its key is not known yet)
        if node.envs:  # an Env() not set: the step cannot run, whatever runs before it (a
            try:       # run stops before any step: run checks them all first)
                self.env_inputs.check_set([node])
            except ParamError as e:
                self.report(StepStarted(step=node.name))
                self._fail(node.name, None, e.message)
                return
        if self.opts.all_reasons:
            seen: Dict[str, str] = {}
            for ups in (previous.components.get("inputs", {}) if previous else {}).values():
                seen.update(ups)
            digests = {**{d: seen.get(d, "") for d in pending}, **self.digests}
            try:
                envs, version = self._controls(node)
                comps = compute_components(node, self.root, self.fp, self.statcache, digests,
                                           self.server.overlay, self.elements, envs, version)
                fingerprint = comps.fingerprint()
            except (MissingInput, ParamError):  # an Env() not set: it would fail when it runs
                comps = None  # a file an upstream step writes may not exist yet
        verdict = decide(node, comps, fingerprint, self._policy(node), previous,
                         self._lookup(node), self.server.usable,
                         all_reasons=self.opts.all_reasons, pending=pending,
                         verify=self.discovery.verify,
                         alternates=self.store.alternate_actions)
        self.results[node.name] = StepResult(node.name, WOULD, reasons=verdict.reasons)
        self.report(WouldExecute(step=node.name, reasons=verdict.reasons))

    def _serve(self, node: Node, fingerprint: str, entry: ActionEntry,
               previous: Optional[ActionEntry]) -> None:
        name = node.name
        restored, restore_reasons = self.server.serve(entry, previous)
        self.digests[name] = entry.value_digest
        if name in self.indexed:
            self.elements[name] = entry.components.get("elements") or {}
        self.recorder.served(name, fingerprint, entry, previous)
        self.results[name] = StepResult(
            name, CACHED, fingerprint, 0.0, restore_reasons or [_UP_TO_DATE],
            entry.value_digest, store_path=self.store.path,
        )
        if not self.opts.dry_run:
            self.report(StepStarted(step=name))
            self.report(StepCached(step=name, restored=restored))
            return
        would = [f"restore {r.subject} from the store" if r.kind == R.OUTPUT_RESTORE
                 else f"remove {r.subject} (the step did not make it)"
                 for r in restore_reasons or ()]
        self.report(StepCached(step=name, would=would))

    # -- executing -----------------------------------------------------------------------------
    def _value_of(self, name: str) -> Any:
        data: Any = self.values.get(name)
        if data is None:
            digest = self.digests[name]
            try:
                data = self.store.map_blob(digest, self.statcache)  # verified; a new mapping
            except KeyError:
                raise CorruptBlob(digest) from None  # gone: purge the entries and run again
            if isinstance(data, bytes):
                self.values[name] = data
        try:
            decoding = self._decoding
            if decoding is None or bytes(data[:4]) == CANONICAL_MAGIC:  # plain data: no code
                return loads(data)
            recorder = TraceRecorder(decoding[0])
            try:
                with recorder:
                    return loads(data)
            finally:
                if recorder.trace is not None:
                    decoding[1].append(recorder.trace)
        except Exception as e:  # noqa: BLE001 - see below
            # A value made by an earlier run that no longer decodes (damage, a forged data
            # value, its class gone) is a missing one: its producer runs again. A value this
            # run made, or one whose decoding failed in the project's own code (a value type's
            # load()), is not repaired by running the producer again: its consumer fails.
            made_now = name in self.results and self.results[name].status == EXECUTED
            if made_now or self._raised_in_project(e):
                raise _Unloadable(name, e) from None
            raise CorruptBlob(self.digests[name], f"{type(e).__name__}: {e}") from None

    def _raised_in_project(self, e: BaseException) -> bool:
        tb = e.__traceback__
        while tb is not None:
            if self.fp.project_file(tb.tb_frame.f_code.co_filename) is not None:
                return True
            tb = tb.tb_next
        return False

    def _resolve(self, v: Any, envs: Dict[str, str]) -> Any:
        t = type(v)
        if t is FileRef:  # the usual argument: a list of File inputs
            return self._path(v.path)
        if t is list or t is tuple:
            out = [self._resolve(x, envs) for x in v]
            return out if t is list else tuple(out)
        if isinstance(v, InputRef):
            value = self._value_of(v.node)
            for key in v.path:
                value = value[key]
            return value
        if isinstance(v, FileRef):
            return self._path(v.path)
        if isinstance(v, EnvRef):
            return envs[v.name]  # as read when the step was fingerprinted
        if isinstance(v, OutputRef):
            full = self._prefix + v.path
            parent = os.path.dirname(full)
            if not os.path.isdir(parent):  # a stat; mkdir of an existing folder costs more
                try:
                    os.makedirs(parent, exist_ok=True)
                except OSError as e:
                    raise _NoOutputFolder(
                        f"the folder of its Output({v.path!r}) cannot be made: "
                        f"{e.strerror or e} ({e.filename or parent})") from None
            return self._path(v.path)
        if t is dict:
            return {k: self._resolve(x, envs) for k, x in v.items()}
        return v

    def _trace_options(self, node: Node, comps: Components) -> TraceOptions:
        c = self.config
        ignore = c.ignore_env  # a declared Env is keyed already; a secret one only by HMAC:
        if node.envs:  # the recorder must not store its value too
            ignore = (*ignore, *(r.name for r in node.envs))
        return TraceOptions(self.root, c.store, tuple(node.outputs), c.track_reads, True,
                            c.trace_calls, ignore, frozenset(comps.files))

    def _start(self, node: Node, comps: Components, fingerprint: str, reasons: List[Reason],
               previous: Optional[ActionEntry], same: Optional[str] = None,
               traced: bool = False) -> None:
        """Hand the step to the executor; ``traced``: its entry can be served later (all but
        @no_cache steps), so what it touches is recorded (zenbuild.trace) and kept on it."""
        name = node.name
        envs = self.env_values.get(name, {})
        decoded: List[Trace] = []
        if traced and node.upstream:
            self._decoding = (self._trace_options(node, comps), decoded)
        try:
            resolved = {k: self._resolve(v, envs) for k, v in node.args.items()}
        except _Unloadable as e:
            self._fail(name, fingerprint, f"step {name}: the value of step {e.producer} it "
                       f"receives cannot be loaded:\n{user_traceback_text(e.error)}",
                       reasons=reasons)
            return
        except _NoOutputFolder as e:
            self._fail(name, fingerprint, f"step {name}: {e}", reasons=reasons)
            return
        finally:
            self._decoding = None
        if decoded:
            self._decoded[name] = decoded
        self.recorder.clear_outputs(node, previous)
        call_args, call_kwargs = node.step.params.call_args(resolved)
        self.running[name] = (comps, fingerprint, time.perf_counter(),
                              None if node.step.no_cache else same)
        self.report(StepStarted(step=name))
        self.report(StepExecuting(step=name, reasons=reasons))
        self.results[name] = StepResult(name, RUNNING, fingerprint, reasons=reasons)
        self.executor.submit(Task(name, node.step.fn, call_args, call_kwargs,
                                  self._trace_options(node, comps) if traced else None))

    def _stale_code(self, name: str) -> Optional[Reason]:
        """A reason not to cache: the step ran code that is not what its files hold now (a
        module imported by a script or notebook before an edit, or from a stale .pyc); the
        fingerprint was made from the files, so the result must not be stored under it."""
        from zenbuild.fingerprint.running import stale_source
        from zenbuild.imported import loaded_from_source

        path = stale_source(self.fp.code(self.g.nodes[name].step.fn, entry=True).funcs,
                            loaded_from_source)
        if path is None:
            return None
        return Reason(R.STALE_CODE, shown(path, self.root), detail={"step": name})

    def _element_digests(self, name: str, value: Any) -> Dict[str, str]:
        """The digest of each element of ``value`` that a consumer reads by an item path."""
        out: Dict[str, str] = {}
        for path in self.indexed[name]:
            try:
                v = value
                for key in path:
                    v = v[key]
                out[element_key(path)] = value_digest(v, code_of=self.fp.value_code)
            except Exception:  # no such element, or not storable: the whole value stands in
                continue
        return out

    def _adopt(self, outcome: Outcome) -> Optional[StoredValue]:
        """A value its worker wrote into the store: adopted as it is when the code digests it
        carries for the project code its pickle names are the ones this process gives that
        code. Else (a class this process cannot find, a worker that saw other source, or
        none it could digest) ``outcome.value`` becomes the value, loaded from the worker's
        blob (O(1), mapped), to be encoded here (returns None). The blob is adopted already."""
        stored: StoredValue = outcome.value
        for module, qualname, digest in stored.refs:
            obj = loaded_object(module, qualname)
            if obj is None or self.fp.value_code(obj) != digest:
                outcome.value = loads(self.store.map_blob(stored.digest))
                self.replaced.append(stored.digest)
                return None
        return stored

    def _encoders(self, data: Any) -> List[List[Any]]:
        """The value's trace of the registered code that encoded it (fingerprint.encoders):
        classes met by this process's pickle, or named by the worker that stored it (their
        digests there were checked against this process's by _adopt)."""
        if isinstance(data, StoredValue):
            if not data.types:
                return []
            classes = [find_class(self.fp, m, q) for m, q in data.types]
            return encoder_record(self.fp, [c for c in classes if c is not None])
        return encoder_record(self.fp, data.types) if data.types else []

    def _order_hint(self, name: str, outcome: Outcome) -> str:
        """A failed step that tried to open a missing file another step declares as its Output:
        the usual cause is that nothing orders the two (the file was not passed as File(),
        nor the step's handle), so say how to order them."""
        tried = [rel for rel in (outcome.trace.reads if outcome.trace is not None else ())
                 if not os.path.lexists(os.path.join(self.root, rel))]
        for rel in tried:
            for other, node in self.g.nodes.items():
                if other != name and any(rel == o or rel.startswith(o.rstrip("/") + "/")
                                         for o in node.outputs):
                    return (f"\nHint: {rel} is an Output of step {other}, and nothing orders step "
                            f"{name} after it. Pass File({rel!r}) (or what {other}() "
                            f"returns) to step {name}, so that {name} runs after {other} and "
                            "reruns when it changes.")
        return ""

    def _finish(self, outcome: Outcome) -> bool:
        name = outcome.name
        comps, fingerprint, _, same = self.running.pop(name)
        reasons = self.results[name].reasons
        for before in self._decoded.pop(name, ()):  # what decoding its arguments touched
            if outcome.trace is not None:
                merge_into(outcome.trace, before)
        if not outcome.ok:
            outputs = self.g.nodes[name].outputs
            if outputs and not self.opts.dry_run:  # what the failed step left is its own: its
                self.recorder.unstored.add(self.root, outputs)  # next run overwrites it
            self._fail(name, fingerprint, outcome.error + self._order_hint(name, outcome),
                       outcome.duration, reasons)
            return False
        data: Any = None
        try:
            if isinstance(outcome.value, StoredValue):  # the worker stored it (worker_store)
                try:
                    self.store.adopt_value(outcome.value)
                except KeyError:
                    self._fail(name, fingerprint, f"step {name}: its worker wrote the value "
                               f"into a store at {self.store.path} that this process does not "
                               "see (the workers need the store at the same path)",
                               outcome.duration)
                    return False
                data = self._adopt(outcome)
            if data is None:
                data = encode_value(outcome.value, code_of=self.fp.value_code)
        except Exception as e:
            why = (str(e) if isinstance(e, Unstable)  # (it says how to fix it itself)
                   else f"{type(e).__name__}: {str(e).rstrip('.')}. Return plain data or a "
                   "picklable object.")
            self._fail(name, fingerprint, f"the return value of step {name} cannot be stored: "
                       f"{why}{self._project_traceback(e)}", outcome.duration)
            return False
        if name in self.indexed:
            value = outcome.value
            if isinstance(value, StoredValue):
                value = loads(self.store.map_blob(value.digest))
            comps.elements = self._element_digests(name, value)
            self.elements[name] = comps.elements
            del value
        stale = self._stale_code(name)
        try:
            value_digest, uncached = self.recorder.record(
                self.g.nodes[name], comps, fingerprint, getattr(data, "parts", data),
                outcome.duration, outcome.trace, same, stale, self._encoders(data))
        except CaptureFailed as e:
            self._fail(name, fingerprint, str(e), outcome.duration)
            return False
        if not isinstance(data, StoredValue) and data.size <= INLINE_KEEP:
            self.values[name] = data.tobytes()
        outcome.value = None  # a big value lives on in its blob, not in this process
        del data
        self.digests[name] = value_digest
        if outcome.trace is not None and outcome.trace.writes:
            self._undeclared_writes(name, outcome.trace)
        if uncached is not None:  # kept in the run's history: explain shows it
            reasons = [*reasons, uncached]
        if same is not None and same != value_digest:
            notice = Reason(R.NOT_DETERMINISTIC, name, same, value_digest)
            self.report(Warning_(message=R.text(notice)))
            reasons = [*reasons, notice]
        self.results[name] = StepResult(
            name, EXECUTED, fingerprint, outcome.duration, reasons, value_digest,
            store_path=self.store.path,
        )
        self.report(StepFinished(step=name, duration=outcome.duration, uncached_reason=uncached))
        return True

    def _undeclared_writes(self, name: str, trace: Trace) -> None:
        """One warning per step: files it wrote inside the project that are not Outputs."""
        first, more = trace.writes[0], len(trace.writes) - 1
        notice = Reason(R.UNDECLARED_WRITE, first, detail={"step": name, "more": more})
        self.report(Warning_(message=R.text(notice)))



_UP_TO_DATE = Reason(R.UP_TO_DATE)
