"""GitHub Actions output: workflow-command annotations (`::error title=...::...`) for failed and
stale steps, and a Markdown table for the job summary."""

from __future__ import annotations

import os
import re
from typing import IO, Any, Dict, List, Optional, Tuple

from zenbuild.events import (
    Event,
    Reporter,
    RunFinished,
    StepCached,
    StepErrored,
    StepFinished,
    StepSkipped,
    Warning_,
    summary_line,
)
from zenbuild.reasons import text as reason_text


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, title: str = "", file: str = "",
               line: Optional[int] = None) -> str:
    """One workflow command, e.g. ``::error title=Step x failed,file=p.py,line=3::boom``."""
    props: List[str] = []
    if title:
        props.append(f"title={_escape_prop(title)}")
    if file:
        props.append(f"file={_escape_prop(file)}")
        if line:
            props.append(f"line={line}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{_escape_data(message.rstrip())}"


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)', re.M)


def error_location(error: str, root: str) -> Tuple[str, Optional[int]]:
    """The innermost traceback frame inside ``root``, as a path relative to the working
    directory (where a CI job checks out the repository) and a line number."""
    best: Tuple[str, Optional[int]] = ("", None)
    root = os.path.realpath(root)
    for path, line in _FRAME.findall(error):
        real = os.path.realpath(path)
        if real.startswith(root + os.sep) and os.sep + ".venv" + os.sep not in real:
            rel = os.path.relpath(real, os.getcwd())
            best = (rel.replace(os.sep, "/") if not rel.startswith("..") else real, int(line))
    return best


def _last_line(error: str) -> str:
    lines = [x for x in error.strip().splitlines() if x.strip()]
    return lines[-1] if lines else "failed"


class GithubReporter(Reporter):
    """Prints an annotation per failed step and warning, and on finish a summary notice; appends
    a Markdown table of the steps to $GITHUB_STEP_SUMMARY when that is set."""

    def __init__(self, root: str, stream: Optional[IO[str]] = None,
                 summary_path: Optional[str] = None) -> None:
        import sys

        self.root = root
        self.stream = stream or sys.stdout
        self.summary_path = summary_path if summary_path is not None else os.environ.get(
            "GITHUB_STEP_SUMMARY", "")
        self.rows: Dict[str, Tuple[str, str]] = {}

    def _emit(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def handle(self, e: Event) -> None:
        if isinstance(e, StepErrored):
            file, line = error_location(e.error, self.root)
            self._emit(annotation("error", e.error or "failed", f"zenbuild: step {e.step} failed: "
                                  f"{_last_line(e.error)}", file, line))
            self.rows[e.step] = ("failed", f"{e.duration:.3f}s")
        elif isinstance(e, Warning_):
            self._emit(annotation("warning", e.message, "zenbuild"))
        elif isinstance(e, StepCached):
            self.rows[e.step] = ("cached", "")
        elif isinstance(e, StepFinished):
            self.rows[e.step] = ("executed", f"{e.duration:.3f}s")
        elif isinstance(e, StepSkipped):
            self.rows[e.step] = ("skipped", reason_text(e.because) if e.because else "")
        elif isinstance(e, RunFinished):
            text = summary_line(e.counts, e.duration)
            if e.status != "failed":
                self._emit(annotation("notice", text, "zenbuild run"))
            self._write_summary(e.status, text)

    def _write_summary(self, status: str, text: str) -> None:
        if not self.summary_path:
            return
        out = [f"### zenbuild run: {status}", "", text, "", "| step | status | detail |",
               "| --- | --- | --- |"]
        out += [f"| {k} | {v[0]} | {v[1]} |" for k, v in self.rows.items()]
        with open(self.summary_path, "a") as f:
            f.write("\n".join(out) + "\n\n")


def stale_annotations(ev: Any) -> List[str]:
    """One ::error per step that fails `status --check`, pointing at the step's definition."""
    out: List[str] = []
    for s in ev.blocking:
        file, line = ev.locations.get(s.name, ("", None))
        out.append(annotation("error", "; ".join(reason_text(r) for r in s.reasons),
                              f"zenbuild: step {s.name} is {s.state}", file, line))
    return out
