"""events: the console reporter's lines and when they reach the stream."""

from __future__ import annotations

import io
from typing import List

from zenbuild import reasons as R
from zenbuild.events import (
    ConsoleReporter,
    RunFinished,
    RunStarted,
    StepCached,
    StepExecuting,
    StepStarted,
)
from zenbuild.reasons import Reason


class Pipe(io.StringIO):
    """A non-terminal stream that records each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: List[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


def test_cached_lines_are_held_and_written_together_when_not_a_terminal() -> None:
    out = Pipe()
    r = ConsoleReporter(stream=out)
    r.handle(RunStarted(pipeline="p", run_id="x", total=3))
    for name in ("a", "b"):
        r.handle(StepStarted(step=name))
        r.handle(StepCached(step=name, restored=[]))
    assert out.writes == []  # nothing is written per line
    r.handle(StepStarted(step="c"))
    r.handle(StepExecuting(step="c", reasons=[Reason(R.NEVER_BUILT)]))
    # before a step runs, everything so far is out, in one write
    assert out.writes == ["Step a has started.\nUsing cached version of a.\n"
                          "Step b has started.\nUsing cached version of b.\n"
                          "Step c has started.\n"]
    r.handle(RunFinished(status="succeeded", counts={"executed": 1, "cached": 2}, duration=0.5))
    assert out.getvalue().splitlines()[-1] == "1 executed, 2 cached in 0.50s"


def test_flush_writes_what_is_held_when_a_run_ends_early() -> None:
    out = Pipe()
    r = ConsoleReporter(stream=out)
    r.handle(StepStarted(step="a"))
    r.handle(StepCached(step="a", restored=[]))
    r.flush()  # what run_bound does in its finally block (Ctrl-C, an error)
    assert out.getvalue() == "Step a has started.\nUsing cached version of a.\n"


def test_held_lines_are_flushed_once_they_are_half_a_second_old() -> None:
    now = [100.0]
    out = Pipe()
    r = ConsoleReporter(stream=out, clock=lambda: now[0])
    r.handle(StepStarted(step="a"))
    now[0] += 0.4
    r.handle(StepCached(step="a", restored=[]))
    assert out.writes == []  # younger than 0.5 s: still held
    now[0] += 0.2  # 0.6 s since the last flush
    r.handle(StepStarted(step="b"))
    assert out.writes == ["Step a has started.\nUsing cached version of a.\nStep b has started.\n"]
    now[0] += 0.1
    r.handle(StepCached(step="b", restored=[]))
    assert len(out.writes) == 1  # the age counts from the last flush


def test_reasons_reach_the_console_as_text() -> None:
    from zenbuild import reasons as R
    from zenbuild.events import StepFinished, StepSkipped, WouldExecute
    from zenbuild.reasons import Reason

    out = Pipe()
    r = ConsoleReporter(stream=out, explain=True)
    r.err = out  # warnings too, in order
    r.handle(StepExecuting(step="c", reasons=[Reason(R.PARAM_CHANGED, "top", "10", "5")]))
    r.handle(StepFinished(step="c", duration=0.25, uncached_reason=Reason(
        R.DIR_CHANGED_DURING, "data", detail={"step": "c"})))
    r.handle(StepSkipped(step="d", because=Reason(R.UPSTREAM_FAILED, "c")))
    r.handle(WouldExecute(step="e", reasons=[Reason(R.NEVER_BUILT), Reason(R.UPSTREAM_PENDING, "c")]))
    r.flush()
    assert out.getvalue().splitlines() == [
        "  reason: param top: 10 -> 5",
        "Step c has finished in 0.250s.",
        "Warning: input folder data changed while step c ran; its result was used but not cached",
        "Step d skipped: upstream step c failed.",
        "Would execute e: never built; upstream step c would execute",
    ]
