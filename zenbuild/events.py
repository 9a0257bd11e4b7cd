"""Run events and the reporters that subscribe to them (console lines, JSON summary, log).
Events carry reasons as records; the console turns them into text (reasons.text)."""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Callable, Dict, List, Optional

from zenbuild.reasons import Reason
from zenbuild.reasons import text as reason_text


class Event:
    """Base of run events; keyword arguments set attributes (plain classes: cheap to import)."""

    step: str = ""

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class RunStarted(Event):
    pipeline: str = ""
    run_id: str = ""
    total: int = 0


class StepStarted(Event):
    pass


class StepCached(Event):
    restored: List[str] = []
    would: List[str] = []  # a dry run: what a run would do to the outputs ("restore PATH")


class StepExecuting(Event):
    reasons: List[Reason] = []


class StepFinished(Event):
    duration: float = 0.0
    uncached_reason: Optional[Reason] = None  # why the result was used but not cached


class StepErrored(Event):
    """A step failed (its error text is the user's traceback or zenbuild's message). Not
    errors.StepFailed, which is the exception the Python API raises."""

    duration: float = 0.0
    error: str = ""


class StepSkipped(Event):
    because: Optional[Reason] = None


class WouldExecute(Event):
    reasons: List[Reason] = []


class Warning_(Event):
    message: str = ""


class OutputRemoved(Event):
    """An Output of a call the pipeline no longer makes (``step``, gone from ``pipeline``),
    or that the call no longer declares (``undeclared``), removed before it was needed; ``would``: a dry run, which removes nothing, and then
    ``users``: what is there is the user's (a run would move it to the trash; a run's own
    Trash says so itself)."""

    path: str = ""
    pipeline: str = ""
    would: bool = False
    users: bool = False
    undeclared: bool = False  # the call is still there, but no longer declares this Output


class RunFinished(Event):
    status: str = ""
    counts: Dict[str, int] = {}
    duration: float = 0.0


def leftover_why(step: str, pipeline: str, undeclared: bool) -> str:
    """Why an Output an earlier run made is removed (OutputRemoved, and the trash's line)."""
    if undeclared:
        return f"an earlier output of {step}, which no longer declares it"
    return f"an output of {step}, which is no longer in pipeline {pipeline}"


def summary_line(counts: Dict[str, int], duration: float) -> str:
    parts = [f"{counts.get('executed', 0)} executed", f"{counts.get('cached', 0)} cached"]
    if counts.get("would_execute"):  # a dry run: what a run would execute
        parts.append(f"{counts['would_execute']} would execute")
    for k in ("failed", "skipped"):
        if counts.get(k):
            parts.append(f"{counts[k]} {k}")
    return f"{', '.join(parts)} in {duration:.2f}s"


class Reporter:
    def handle(self, event: Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> None:
        """Write out anything held back (called when a run ends, however it ends)."""


RESTORED_SHOWN = 10  # restored paths a step's line lists (all of them with -v)


class ConsoleReporter(Reporter):
    """The seed's log lines, one per line; a progress line on a terminal."""

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        quiet: bool = False,
        verbose: bool = False,
        explain: bool = False,
        log: Optional[List[str]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock  # seconds; decides when held lines are flushed by age
        self.quiet = quiet
        self.verbose = verbose
        self.explain = explain
        self.log = log if log is not None else []
        self.err = sys.stderr
        self.tty = self.err.isatty() and not quiet
        self.color = self.tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.total = 0
        self.done = 0
        self.running: List[str] = []
        self._progress_shown = False
        # Lines for the main stream held back until a flush point when it is not a terminal:
        # stderr (the stream with --json) is line-buffered, and a write per line cost a no-op
        # of 1,000 steps 2,000 system calls.
        self._held: List[str] = []
        self._flushed = clock()  # held lines go out at least every 0.5 s
        try:
            self._hold = not self.stream.isatty()
        except (AttributeError, ValueError):
            self._hold = False

    def _c(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _clear(self) -> None:
        if self._progress_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._progress_shown = False

    def _progress(self) -> None:
        if not self.tty or not self.running:
            return
        names = ", ".join(self.running[:3]) + (" ..." if len(self.running) > 3 else "")
        self.err.write(f"\r\x1b[K[{self.done}/{self.total}] running: {names}")
        self.err.flush()
        self._progress_shown = True

    def line(
        self,
        text: str,
        important: bool = False,
        stream: Optional[IO[str]] = None,
        flush: bool = False,
    ) -> None:
        """Write one log line. The main stream is flushed when something is about to take
        time (a step starts executing), at the end, and before anything goes to the other
        stream, not after every cached step: a no-op of 1,000 steps writes 2,000 lines."""
        self.log.append(text)
        if self.quiet and not important:
            return
        self._clear()
        out = stream or self.stream
        if out is self.stream and self._hold:
            self._held.append(text + "\n")
            if flush or len(self._held) >= 256 or self.clock() - self._flushed > 0.5:
                self.flush()
            return
        if out is not self.stream:
            self.flush()  # keep the order of lines across the two streams
        out.write(text + "\n")
        if flush or out is not self.stream:
            out.flush()

    def flush(self) -> None:
        self._flushed = self.clock()
        if self._held:
            text = "".join(self._held)
            self._held.clear()  # a failed write (a closed pipe) must not repeat at every flush
            self.stream.write(text)
        self.stream.flush()

    def handle(self, e: Event) -> None:
        if isinstance(e, RunStarted):
            self.total = e.total
        elif isinstance(e, StepStarted):
            self.line(f"Step {e.step} has started.")
        elif isinstance(e, StepExecuting):
            if self.explain or self.verbose:
                for r in e.reasons:
                    self.line(f"  reason: {reason_text(r)}")
            self.running.append(e.step)
            self.flush()  # show "Step X has started." before the step takes its time
            self._progress()
        elif isinstance(e, StepCached):
            self.done += 1
            if e.restored or e.would:  # (most served steps: neither)
                self._restores(e.restored, e.would)
            self.line(f"Using cached version of {e.step}.")
        elif isinstance(e, StepFinished):
            self.done += 1
            if e.step in self.running:
                self.running.remove(e.step)
            self.line(f"Step {e.step} has finished in {e.duration:.3f}s.", flush=True)
            if e.uncached_reason is not None:
                self.line(self._c(f"Warning: {reason_text(e.uncached_reason)}", "33"), important=True,
                          stream=self.err)
            self._progress()
        elif isinstance(e, StepErrored):
            self.done += 1
            if e.step in self.running:
                self.running.remove(e.step)
            self.line(self._c(f"Step {e.step} failed after {e.duration:.3f}s.", "31"),
                      important=True)
            if e.error:
                self.line(e.error.rstrip("\n"), important=True, stream=self.err)
            self._progress()
        elif isinstance(e, StepSkipped):
            self.done += 1
            self.line(f"Step {e.step} skipped: {reason_text(e.because) if e.because else ''}.")
        elif isinstance(e, WouldExecute):
            self.line(f"Would execute {e.step}: {'; '.join(reason_text(r) for r in e.reasons)}")
        elif isinstance(e, Warning_):
            self.line(self._c(f"Warning: {e.message}", "33"), important=True, stream=self.err)
        elif isinstance(e, OutputRemoved):
            what = (f"A run would move your version of {e.path} to the trash" if e.users
                    else f"A run would remove {e.path}" if e.would else f"Removed {e.path}")
            self.line(f"{what}: {leftover_why(e.step, e.pipeline, e.undeclared)}.")
        elif isinstance(e, RunFinished):
            self._clear()
            text = summary_line(e.counts, e.duration)
            if e.status == "failed":
                text = self._c(text, "31")
            self.line(text, important=True, flush=True)

    def _restores(self, restored: List[str], would: List[str]) -> None:
        """What a served step put back (or, in a dry run, would): a folder's hundreds of
        files as a few paths and a count, unless -v."""
        many = not self.verbose and len(restored) > RESTORED_SHOWN
        for p in restored[:5] if many else restored:
            self.line(f"Restored {p} from the store.")
        if many:
            self.line(f"Restored {len(restored) - 5} more files from the store (-v lists them).")
        many = not self.verbose and len(would) > RESTORED_SHOWN
        for w in would[:5] if many else would:
            self.line(f"A run would {w}.")
        if many:
            self.line(f"A run would put back or remove {len(would) - 5} more files "
                      "(-v lists them).")


class Fanout(Reporter):
    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = [r for r in reporters if r is not None]

    def handle(self, event: Event) -> None:
        for r in self.reporters:
            r.handle(event)

    def flush(self) -> None:
        for r in self.reporters:
            f = getattr(r, "flush", None)
            if f is not None:
                f()

    def line(self, text: str, **kw: Any) -> None:
        """Worker output and summaries go through the first reporter that writes lines, so
        they keep their place among its lines."""
        for r in self.reporters:
            f = getattr(r, "line", None)
            if f is not None:
                f(text, **kw)
                return
        sys.stdout.write(text + "\n")


def json_summary(result: Any) -> Dict[str, Any]:
    """What `run --json` prints: the run and every step; a failed step with its error's type,
    message and the user's traceback."""
    steps = []
    for s in result.steps.values():
        row: Dict[str, Any] = {
            "name": s.name,
            "status": s.status,
            "fingerprint": s.fingerprint,
            "duration_s": round(s.duration, 6),
        }
        if s.status == "failed" or s.error:
            row["error"] = _error_fields(s.error or "")
        if s.status != "cached":  # why it ran, or would run (--dry-run): the records, for scripts
            from zenbuild.reasons import to_json as reason_json

            row["reasons"] = [reason_json(r) for r in s.reasons]
        steps.append(row)
    return {
        "pipeline": result.pipeline,
        "run_id": result.run_id,
        "status": result.status,
        "steps": steps,
    }


def _error_fields(tb: str) -> Dict[str, Any]:
    """Type and message of a failed step from its traceback text (the last ``Type: message``
    line format_exception writes), and the traceback itself."""
    import re

    lines = tb.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        m = re.match(r"^([A-Za-z_][\w.]*)(?:: (.*))?$", lines[i])
        if m:
            message = "\n".join([m.group(2) or "", *lines[i + 1:]]).strip()
            return {"type": m.group(1), "message": message, "traceback": tb}
    return {"type": "Error", "message": tb.strip(), "traceback": tb}
