"""Run a bound pipeline: the workspace lock, the executor and remote cache, the scheduler, and
a restart when a corrupt blob is found. The one module the DSL's ``.run()`` reaches (lazily)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Set, Union

from zenbuild.config import Config
from zenbuild.errors import CorruptBlob, PathError
from zenbuild.events import ConsoleReporter, Reporter, Warning_

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.dsl import BoundPipeline
    from zenbuild.graph import Graph
    from zenbuild.result import RunResult


def run_bound(
    bound: BoundPipeline,
    enable_cache: Optional[bool] = None,
    config: Optional[Config] = None,
    reporter: Optional[Reporter] = None,
    dry_run: bool = False,
    explain: bool = False,
    keep_going: bool = False,
    wait: bool = True,
    targets: Optional[List[str]] = None,
    executor: Any = None,
    log: Optional[List[str]] = None,
    jobs: Optional[int] = None,
    executor_name: Optional[str] = None,
    dask_scheduler: Optional[str] = None,
    remote_cache: Optional[str] = None,
    remote_upload: Optional[bool] = None,
    graph: Optional[Graph] = None,
    steps: Union[str, Sequence[str], None] = None,
    rerun: Union[str, Sequence[str], None] = None,
    now: Optional[float] = None,
) -> RunResult:
    """Run ``bound`` (traced again unless its ``graph`` is given, as the front door does).
    ``steps`` (or ``targets``): run only those steps and what they need; ``rerun``: execute
    those steps even if cached (their dependents only if the output changed); ``now``: the
    wall time cached results are aged by for cache_expires_after (default: the clock, or
    ZENBUILD_NOW)."""
    chosen = _names(targets) + _names(steps)
    if config is None:  # the Python API: project.run_from_api finds the project and binds
        from zenbuild.errors import ZenbuildError

        raise ZenbuildError("run_bound needs a Config; call BoundPipeline.run()")
    log = log if log is not None else []
    if reporter is None:
        reporter = ConsoleReporter(explain=explain, log=log)
    from zenbuild.executors import GcPause, InProcessExecutor
    from zenbuild.scheduler import RunOptions, Scheduler
    from zenbuild.store.db import Store
    from zenbuild.store.outputs import check_placement, output_rels, sweep

    with GcPause():  # on again around each step's own code (executors.call_task)
        if graph is None:
            graph = bound.trace(config.root)
        rels = output_rels(graph)
        try:  # a store and Outputs overlapping; an Output folder of a step it builds blocked
            check_placement(config.root, config.store, rels, _building(graph, chosen))
        except PathError:
            _drop_unused_store(config.store)  # what this refused run made must not block the fix
            raise
        store = Store(config.store)
        own_executor, remote = executor is None, None
        try:
            if not dry_run:
                store.lock(wait=wait, on_wait=lambda pid: reporter.handle(Warning_(
                    message=f"waiting for another zenbuild run (pid {pid}) in this project to finish")))
                sweep(config.root, config.store, rels)  # what killed runs left behind
            from zenbuild.executors.choose import execution_for

            executor, remote = execution_for(config, store, reporter, executor, jobs, executor_name,
                                             dask_scheduler, remote_cache, remote_upload)
            for attempt in range(3):
                sched = Scheduler(
                    graph, config, store, executor or InProcessExecutor(), reporter,
                    RunOptions(enable_cache, dry_run, explain, keep_going, chosen or None,
                               {k: v for k, v in bound.params.items()},
                               rerun=_names(rerun) or None, now=now),
                    bound.pipeline.enable_cache, log, remote=remote,
                )
                try:
                    with _frozen():
                        return sched.run()
                except CorruptBlob as e:
                    fps = store.actions_using(e.digest)
                    store.delete_actions(fps)
                    if fps:
                        what = (f"removed it and the {len(fps)} cache entr"
                                f"{'y' if len(fps) == 1 else 'ies'} that used it, and started "
                                "the run again")
                    else:  # a folder Output's file: its entry names the folder's manifest
                        what = ("removed it and started the run again (no cache entry names "
                                "it itself, as with a file of a folder Output: the step that "
                                "made it runs again)")
                    reporter.handle(Warning_(message=f"{e}; {what}"))
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:  # each part even when one before it raised: the store (its connection and
            try:  # the workspace lock) is closed last, whatever happens
                if remote is not None:
                    remote.close(reporter)
            finally:
                try:
                    flush = getattr(reporter, "flush", None)  # a reporter: any object with handle()
                    if flush is not None:
                        try:
                            flush()
                        except OSError:  # a closed pipe (`zenbuild run | head`)
                            pass
                    if own_executor and executor is not None:
                        executor.close()
                finally:
                    store.close()


class _frozen:
    """``with _frozen():`` keeps the objects that exist when a walk starts (the graph, the stat
    cache, modules, the caller's data) out of the cyclic GC's scans until it ends: steps run
    with the GC on, and each full collection in a cold run of 5,000 steps walked all of them
    again (~330 ms in all). They are collectable again afterwards (gc.unfreeze). Not used when
    the process froze objects itself (those stay frozen)."""

    def __enter__(self) -> None:
        import gc

        from zenbuild.executors import GcPause

        self.frozen = gc.get_freeze_count() == GcPause.frozen_base
        if self.frozen:
            gc.freeze()

    def __exit__(self, *exc: Any) -> None:
        if self.frozen:
            import gc

            gc.unfreeze()


def _names(given: Union[str, Sequence[str], None]) -> List[str]:
    """Step names given as one string or a sequence of them."""
    if given is None:
        return []
    if isinstance(given, str):
        return [given]
    return [str(n) for n in given]


def _building(graph: Any, chosen: List[str]) -> Optional[Set[str]]:
    """The steps a run of ``chosen`` (none: all, None) builds; none for a name that is not a
    step (the scheduler says so, with the steps there are)."""
    if not chosen:
        return None
    from zenbuild.errors import PipelineError
    from zenbuild.policy import named_steps

    try:
        return set(graph.select(named_steps(graph, chosen, "--step")))
    except PipelineError:
        return set()


def _drop_unused_store(store: str) -> None:
    """Remove a store that was never used as one (no database: only the compiled sources the
    command wrote while loading the project), so a refused placement leaves nothing behind
    in an Output folder. Everything removed is zenbuild's own cache."""
    import shutil

    if os.path.exists(os.path.join(store, "zenbuild.db")):
        return
    shutil.rmtree(os.path.join(store, "pycode"), ignore_errors=True)
    try:
        os.rmdir(store)  # only if nothing else is in it
    except OSError:
        pass
