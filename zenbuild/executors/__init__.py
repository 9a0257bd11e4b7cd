"""Executors run the steps that missed the cache, behind one small interface."""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.paths import PACKAGE_DIR
from zenbuild.records import field, record
from zenbuild.trace import Recorder, Trace, TraceOptions


@record
class Task:
    """One step execution: the function and its resolved arguments; ``trace`` (when set) asks
    for a dynamic trace of what the step's own code touches (zenbuild.trace)."""

    name: str
    fn: Callable[..., Any]
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    trace: Optional[TraceOptions] = None


@record
class Outcome:
    """What came back from one execution; ``trace`` is the step's Trace when one was asked for
    (also for a failed step), else None."""

    name: str
    ok: bool
    value: Any = None
    error: str = ""
    duration: float = 0.0
    trace: Optional[Trace] = None


class GcPause:
    """``with GcPause():`` pauses the cyclic garbage collector (if it is on) for a run's own
    work, which makes many small objects and almost no reference cycles: scanning them cost a
    no-op of 1,000 steps ~5 ms. ``depth`` counts the runs in this process that paused it;
    while one has, call_task turns it back on around a step's code."""

    depth = 0
    # How many objects were frozen before zenbuild froze any (gc.freeze: run._frozen). None
    # before Python 3.12, but 3.12's interpreter starts with objects frozen (375 on 3.12.1).
    # The CLI records its count before any project code runs, so its walks still freeze and
    # unfreeze; elsewhere (the Python API) a frozen object may be the caller's, which
    # gc.unfreeze() would release, so a walk freezes only when none is.
    frozen_base = 0

    def __enter__(self) -> None:
        self.paused = gc.isenabled()
        if self.paused:
            gc.disable()
            GcPause.depth += 1

    def __exit__(self, *exc: Any) -> None:
        if self.paused:
            GcPause.depth -= 1
            gc.enable()


def call_task(task: Task) -> Outcome:
    """Run a task here, turning an exception into a failed Outcome with the user's traceback
    (zenbuild's own frames trimmed)."""
    resume = GcPause.depth > 0 and not gc.isenabled()
    if resume:  # the step's code runs as it would outside zenbuild
        gc.enable()
    try:
        return _call(task)
    finally:
        if resume:
            gc.disable()


def _call(task: Task) -> Outcome:
    recorder = Recorder(task.trace) if task.trace is not None else None
    t0 = time.perf_counter()
    try:
        if recorder is None:
            value = task.fn(*task.args, **task.kwargs)
        else:
            with recorder:  # only the step's own code is recorded, not the traceback below
                value = task.fn(*task.args, **task.kwargs)
    except KeyboardInterrupt:  # the user's Ctrl-C (or SIGTERM's): the run stops
        raise
    except BaseException as e:  # noqa: B902 - a step's SystemExit or GeneratorExit is a step
        # failure too (only Ctrl-C stops the run)
        dt = time.perf_counter() - t0
        text = user_traceback_text(e)
        trace = recorder.trace if recorder is not None else None
        return Outcome(task.name, False, error=text, duration=dt, trace=trace)
    dt = time.perf_counter() - t0
    return Outcome(task.name, True, value=value, duration=dt,
                   trace=recorder.trace if recorder is not None else None)


def user_traceback_text(e: BaseException, chain: bool = True) -> str:
    """The traceback of a step's exception without zenbuild's own frames (the call above the
    step, the environment wrapper of the trace recorder...), chained exceptions included
    unless ``chain`` is False."""
    import os
    import traceback

    own = PACKAGE_DIR + os.sep
    te = traceback.TracebackException(type(e), e, e.__traceback__)
    seen = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if not f.filename.startswith(own)])
        todo += [c for c in (t.__cause__, t.__context__) if c is not None]
    return "".join(te.format(chain=chain))


class Executor:
    """Interface: ``slots`` tasks may run at once; ``submit`` starts one; ``wait`` blocks until
    at least one finished and returns the outcomes."""

    slots = 1

    def submit(self, task: Task) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self) -> List[Outcome]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcessExecutor(Executor):
    """Runs each task in this process, one at a time, when asked to wait."""

    slots = 1

    def __init__(self) -> None:
        self._queue: List[Task] = []

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def wait(self) -> List[Outcome]:
        task = self._queue.pop(0)
        return [call_task(task)]
