"""`explain` and `status`: every step's verdict from one dry run of the scheduler that collects
every reason (rebuild.decide with all_reasons=True), so there is no second implementation."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.config import Config
from zenbuild.discovered import malformed
from zenbuild.errors import ConfigError, PipelineError
from zenbuild.events import Event, Reporter
from zenbuild.executors import InProcessExecutor
from zenbuild.project import open_pipeline
from zenbuild.reasons import (
    CACHE_DISABLED,
    CANNOT_RUN,
    NOT_CACHED_KINDS,
    PENDING_KINDS,
    REFRESH_KINDS,
    RESTORE_KINDS,
    Reason,
    text,
)
from zenbuild.scheduler import RunOptions, Scheduler
from zenbuild.states import StepStatus
from zenbuild.store.db import ActionEntry, Store
from zenbuild.trace.globs import display

# A step's state, decided from the kinds of its reasons (never their wording). "stale",
# "error" and "restore" fail `status --check`.
UP_TO_DATE = "up to date"
STALE = "stale"
ALWAYS = "always runs"  # a no_cache step
# waits only on no_cache steps, or on steps executed only to refresh a result (expired, --rerun,
# a failed version probe): reruns if they produce new output (early cutoff)
MAY_RERUN = "may rerun"
ERROR = "error"  # the step cannot run as things are (an input is missing)
SKIPPED = "skipped"  # an upstream step cannot run
RESTORE = "restore"  # cached, but an output on disk differs: a run restores it, executing nothing
BLOCKING = (STALE, ERROR, RESTORE)
NONDETERMINISTIC = ("not deterministic: the last two runs with the same inputs returned different "
                    "values (seed it or mark it @no_cache)")


class _Silent(Reporter):
    def handle(self, event: Event) -> None:
        pass


@dataclass
class StepVerdict:
    """One step's verdict: whether a run would execute it, and every reason (records)."""

    name: str
    function: str
    state: str
    execute: bool
    no_cache: bool
    reasons: List[Reason]
    pending: List[str] = field(default_factory=list)  # upstream steps that would execute
    last_built: Optional[ActionEntry] = None
    # the latest entry was stored when the step, run again with the same key, returned another
    # value than before (commit.nondeterminism marks it)
    nondeterministic: bool = False
    # why the step's last executed result was used but not cached (the last run's history),
    # while no stored entry matches
    not_cached: Optional[Reason] = None

    @property
    def blocking(self) -> bool:
        return self.state in BLOCKING

    @property
    def refresh_only(self) -> bool:
        """Stale only because its cached result is refreshed (expired, forced): the same
        output keeps its dependents cached."""
        own = [r for r in self.reasons if r.kind not in PENDING_KINDS]
        return bool(own) and all(r.kind in REFRESH_KINDS for r in own)


    def to_json(self) -> Dict[str, Any]:
        last = None
        if self.last_built is not None:
            last = {
                "fingerprint": self.last_built.fingerprint,
                "time": _iso(self.last_built.created),
                "duration_s": round(self.last_built.duration, 6),
            }
        return {
            "step": self.name,
            "function": self.function,
            "state": self.state,
            "execute": self.execute,
            "no_cache": self.no_cache,
            "reasons": [text(r) for r in self.reasons],
            "reason_records": [r.to_json() for r in self.reasons],
            "waits_on": self.pending,
            "last_built": last,
            "not_deterministic": self.nondeterministic,
            "last_run_not_cached": None if self.not_cached is None else {
                **self.not_cached.to_json(), "text": text(self.not_cached)},
        }


@dataclass
class Evaluation:
    pipeline: str
    spec: str
    steps: Dict[str, StepVerdict]  # in topological order
    locations: Dict[str, Tuple[str, Optional[int]]] = field(default_factory=dict)  # step -> def

    @property
    def blocking(self) -> List[StepVerdict]:
        return [s for s in self.steps.values() if s.blocking]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def evaluate(
    config: Config,
    pipeline: Optional[str],
    params: Optional[List[str]] = None,
    targets: Optional[List[str]] = None,
    no_cache: bool = False,
) -> Evaluation:
    """Judge every step (or ``targets`` and what they need) without executing anything.
    ``params`` are KEY=VALUE strings, as `run --param` takes them."""
    opened = open_pipeline(name=pipeline, params=list(params or []), config=config)
    spec, pipe, bound, graph = opened.spec, opened.pipeline, opened.bound, opened.graph
    for t in targets or []:
        if t not in graph.nodes:
            raise PipelineError(
                f"pipeline {graph.pipeline} has no step named {t!r}. Its steps are: "
                f"{', '.join(graph.order)}. A step called twice is named NAME_2 for its second "
                "call; for a step of another pipeline, name the pipeline too: "
                f"`zenbuild explain {t} PIPELINE`."
            )
    from zenbuild.store.outputs import check_placement, output_rels

    # what `run` refuses before any step (a store inside an Output, a file blocking an Output's
    # folder), these say too: status called such a step "restore" with exit 0
    check_placement(config.root, config.store, output_rels(graph),
                    set(graph.select(targets)) if targets else None)
    store = Store(config.store)
    try:
        states = store.step_states(graph.pipeline)
        options = RunOptions(
            enable_cache=False if no_cache else None, dry_run=True, targets=targets,
            params=dict(bound.params), all_reasons=True,
        )
        result = Scheduler(
            graph, config, store, InProcessExecutor(), _Silent(), options, pipe.enable_cache
        ).run()
        marked = {n for n, e in states.items() if "not_deterministic" in e.components}
        not_cached = _not_cached(store, graph.pipeline, result)
    finally:
        store.close()
    steps: Dict[str, StepVerdict] = {}
    for name, r in result.steps.items():
        node = graph.nodes[name]
        pending = [d for d in node.deps if d in steps and steps[d].execute]
        status = StepVerdict(name, node.step.name, UP_TO_DATE, False, node.step.no_cache,
                             list(r.reasons), pending, states.get(name), name in marked)
        if r.status == StepStatus.WOULD_EXECUTE:
            status.execute = True
            own = [x for x in r.reasons if x.kind not in PENDING_KINDS]
            if node.step.no_cache or any(x.kind == CACHE_DISABLED and x.subject != "run"
                                         for x in r.reasons):
                # (caching turned off by @step, @pipeline or [steps.NAME]: it executes on
                # every run, as a no_cache step does, and never makes the project stale)
                status.state = ALWAYS
            elif not own and pending and all(not steps[d].blocking or steps[d].refresh_only
                                             for d in pending):
                status.state = MAY_RERUN
            else:
                status.state = STALE
        elif r.status == StepStatus.FAILED:
            status.state, status.execute = ERROR, True
            status.reasons = [Reason(CANNOT_RUN, name, after=(r.error or "").strip())]
        elif r.status == StepStatus.SKIPPED:
            status.state = SKIPPED
        elif r.status == StepStatus.CACHED and any(x.kind in RESTORE_KINDS for x in r.reasons):
            status.state = RESTORE
        status.not_cached = not_cached.get(name)
        steps[name] = status
    locations = {n: _where(graph.nodes[n].step.fn) for n in steps}
    return Evaluation(graph.pipeline, spec, steps, locations)


def _not_cached(store: Store, pipeline: str, result: Any) -> Dict[str, Reason]:
    """Steps a run would execute whose last run used their result but did not cache it: the
    reason that run recorded (reasons.NOT_CACHED_KINDS)."""
    want = {n for n, r in result.steps.items() if r.status == StepStatus.WOULD_EXECUTE}
    if not want:
        return {}
    runs = store.list_runs(pipeline, limit=1)
    out: Dict[str, Reason] = {}
    for row in store.run_steps(runs[0]["id"]) if runs else []:
        if row["step"] in want and row["step"] not in out:
            for rec in row.get("reason_records") or []:
                if isinstance(rec, dict) and rec.get("kind") in NOT_CACHED_KINDS:
                    detail = rec.get("detail")
                    out[row["step"]] = Reason(rec["kind"], rec.get("subject") or "",
                                              rec.get("before"), rec.get("after"),
                                              detail if isinstance(detail, dict) else None)
                    break
    return out


def _where(fn: Callable[..., Any]) -> Tuple[str, Optional[int]]:
    """A step function's file (relative to the working directory when inside it) and line."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return "", None
    rel = os.path.relpath(code.co_filename, os.getcwd())
    path = code.co_filename if rel.startswith("..") else rel.replace(os.sep, "/")
    return path, code.co_firstlineno


# -- text ---------------------------------------------------------------------------------------
def explain_text(ev: Evaluation, step: str) -> str:
    s = ev.steps[step]
    verdict = {
        UP_TO_DATE: "up to date (a run would use the cached result)",
        STALE: "would execute",
        ALWAYS: "would execute (no_cache, or caching turned off)",
        MAY_RERUN: "would execute if an upstream no_cache step produces different output",
        ERROR: "cannot run",
        SKIPPED: "would be skipped",
        RESTORE: "up to date, but its outputs on disk differ (a run restores them)",
    }[s.state]
    lines = [f"step {s.name} (pipeline {ev.pipeline}): {verdict}"]
    if s.state != UP_TO_DATE:
        lines += [f"  - {text(r)}" for r in s.reasons]
    if s.not_cached is not None:
        lines.append(f"its last run was not cached: {text(s.not_cached)}")
    if s.last_built is not None:
        lb = s.last_built
        lines.append(f"last built {_iso(lb.created).replace('T', ' ')} in {lb.duration:.3f}s "
                     f"(fingerprint {lb.fingerprint[:12]})")
    else:
        lines.append("no earlier build of this step is stored")
    if s.nondeterministic:
        lines.append(NONDETERMINISTIC)
    lines += discovered_lines(s.last_built)
    return "\n".join(lines)


def discovered_lines(entry: Optional[ActionEntry]) -> List[str]:
    """What the last build saw while it ran that its static fingerprint does not cover: the
    files it read without File, the variables it read, the project code it ran that the
    static analysis had missed. All of it is verified before the entry is served."""
    rec = entry.discovered if entry is not None else None
    if not rec:
        return []
    if malformed(rec) is not None:  # said by the reasons above; nothing in it can be listed
        return []
    out: List[str] = []
    files = sorted(rec.get("files") or {})
    if files:
        out.append("read while it ran, not declared: " + ", ".join(files))
    listed = sorted(rec.get("listed") or {})
    if listed:
        out.append("folders it listed: " + ", ".join(listed))
    patterns = sorted({display(g[:4]) for g in rec.get("globs") or []})
    if patterns:
        out.append("patterns it listed: " + ", ".join(patterns))
    env = sorted(rec.get("env") or {})
    whole = rec.get("env_all")
    if whole is not None:  # named one by one, the list would be the whole environment
        alone = sorted(set(env) - set(whole))
        out.append(f"environment variables it read: all of os.environ ({len(whole)} tracked "
                   "variables; any set, changed or unset reruns it)"
                   + (", and " + ", ".join(alone) if alone else ""))
    elif env:
        out.append("environment variables it read: " + ", ".join(env))
    calls = [f"{c[0]}:{c[1]}" for c in rec.get("calls") or [] if len(c) >= 2]
    if calls:
        out.append("code it ran that the static analysis had missed: " + ", ".join(sorted(calls)))
    modules = sorted(rec.get("modules") or {})
    if modules:
        out.append("modules it used that the static analysis had missed: " + ", ".join(modules))
    return out


def explain_json(ev: Evaluation, step: str) -> str:
    return json.dumps({"pipeline": ev.pipeline, **ev.steps[step].to_json()}, indent=2)


def status_text(ev: Evaluation) -> str:
    width = max(len(n) for n in ev.steps)
    lines = [f"pipeline {ev.pipeline} ({ev.spec})"]
    for s in ev.steps.values():
        first = "" if s.state == UP_TO_DATE else (text(s.reasons[0]) if s.reasons else "")
        more = f" (+{len(s.reasons) - 1} more)" if s.state != UP_TO_DATE and len(s.reasons) > 1 else ""
        lines.append(f"  {s.name:<{width}}  {s.state:<11}  {first}{more}".rstrip())
        if s.nondeterministic:
            lines.append(f"  {'':<{width}}  {NONDETERMINISTIC}")
    n = sum(1 for s in ev.steps.values() if s.execute)
    stale = len(ev.blocking)
    restore = sum(1 for s in ev.steps.values() if s.state == RESTORE)
    tail = f"{n} of {len(ev.steps)} steps would execute"
    if n:
        may = sum(1 for s in ev.steps.values() if s.execute and s.state == MAY_RERUN)
        parts = [f"{stale - restore} stale"] if stale - restore != n else []
        if may:  # each counted, so "(1 stale)" never stands alone beside may-rerun rows
            parts.append(f"{may} may rerun")
        tail += f" ({', '.join(parts)})" if parts else ""
    if restore:
        tail += f"; {restore} would have outputs restored from the store"
    lines.append(tail)
    return "\n".join(lines)


def _status_obj(ev: Evaluation) -> Dict[str, Any]:
    return {
        "pipeline": ev.pipeline,
        "spec": ev.spec,
        "up_to_date": not ev.blocking,
        "stale": [s.name for s in ev.blocking],
        "steps": [s.to_json() for s in ev.steps.values()],
    }


def status_json(ev: Evaluation) -> str:
    return json.dumps(_status_obj(ev), indent=2)


def status_report(
    config: Config, pipeline: Optional[str], all_pipelines: bool, params: List[str], fmt: str
) -> Tuple[str, List[str]]:
    """What `zenbuild status` prints (fmt: text, json or github) and, for --check, one message
    per pipeline that is not up to date (none when all are)."""
    from zenbuild.inspect.github import stale_annotations

    if all_pipelines and pipeline:
        raise ConfigError(f"give a PIPELINE ({pipeline}) or --all, not both")
    if all_pipelines and not config.pipelines:
        raise ConfigError(f"--all: no pipelines are listed in {config.source or 'zenbuild.toml'}")
    names: List[Optional[str]] = list(config.pipelines) if all_pipelines else [pipeline]
    evs = [evaluate(config, name, params) for name in names]
    if fmt == "json":
        out = json.dumps({"up_to_date": not any(ev.blocking for ev in evs),
                          "pipelines": [_status_obj(ev) for ev in evs]}, indent=2) \
            if all_pipelines else status_json(evs[0])
    else:
        parts = []
        for ev in evs:
            text = status_text(ev)
            if fmt == "github":
                text = "\n".join([text, *stale_annotations(ev)])
            parts.append(text)
        out = "\n\n".join(parts)
    return out, [check_message(ev) for ev in evs if ev.blocking]


def check_message(ev: Evaluation) -> str:
    """The one paragraph `status --check` prints when it fails."""
    names = ", ".join(s.name for s in ev.blocking)
    if all(s.state == RESTORE for s in ev.blocking):  # nothing to execute: outputs to put back
        return (f"zenbuild: {len(ev.blocking)} step(s) of pipeline {ev.pipeline} have outputs "
                f"on disk that differ from their cached results: {names}. Run `zenbuild run "
                f"{ev.pipeline}` to restore them (nothing executes), and `zenbuild explain "
                "STEP` to see which files.")
    return (f"zenbuild: {len(ev.blocking)} step(s) of pipeline {ev.pipeline} are not up to date: "
            f"{names}. Run `zenbuild run {ev.pipeline}` to rebuild them, and "
            "`zenbuild explain STEP` to see why.")
