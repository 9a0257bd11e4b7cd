"""events: the console reporter's lines and when they reach the stream."""

from __future__ import annotations

import io
from typing import List

from zenbuild.events import (
    ConsoleReporter,
    RunFinished,
    RunStarted,
    StepCached,
    StepExecuting,
    StepStarted,
)


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
    r.handle(StepExecuting(step="c", reasons=["never built"]))
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
