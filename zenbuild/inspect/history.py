"""Run history: `zenbuild runs` and `zenbuild runs show RUN_ID`, read from the store's runs and
run_steps tables."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from zenbuild.config import Config
from zenbuild.errors import StoreError, ZenbuildError
from zenbuild.store.db import Store


def open_store(config: Config) -> Store:
    """The project's store, read-only in spirit: a missing store is an error, not created."""
    if not os.path.isdir(config.store):
        raise StoreError(
            f"no store at {config.store}: nothing has been run in this project yet. "
            "Run `zenbuild run` first."
        )
    return Store(config.store, create=False)


def when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def run_duration(run: Dict[str, Any]) -> Optional[float]:
    if run.get("finished") is None:
        return None
    return float(run["finished"]) - float(run["started"])


def list_runs(store: Store, pipeline: Optional[str] = None, limit: Optional[int] = 20) -> List[Dict[str, Any]]:
    runs = store.list_runs(pipeline=pipeline, limit=limit)
    for r in runs:
        r["duration_s"] = run_duration(r)
    return runs


def find_run(store: Store, run_id: str) -> Dict[str, Any]:
    """A run by id, unique id prefix, or ``last``; with its steps and log."""
    if run_id in ("last", "latest"):
        found = store.list_runs(limit=1)
        if not found:
            raise ZenbuildError("there are no runs in this store yet. Run `zenbuild run` first.")
    else:
        found = store.list_runs(prefix=run_id, limit=3)
        exact = [r for r in found if r["id"] == run_id]
        found = exact or found
        if not found:
            raise ZenbuildError(
                f"no run with id {run_id!r}. `zenbuild runs` lists the runs; an id prefix or "
                "`last` works too."
            )
        if len(found) > 1:
            raise ZenbuildError(
                f"run id prefix {run_id!r} is ambiguous ({', '.join(r['id'] for r in found)}, ...); "
                "give more of the id."
            )
    run = found[0]
    run["duration_s"] = run_duration(run)
    run["steps"] = store.run_steps(run["id"])
    run["log"] = store.run_log(run["id"])
    return run


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _dur(d: Optional[float]) -> str:
    return "-" if d is None else f"{d:.2f}s"


def runs_text(runs: List[Dict[str, Any]]) -> str:
    if not runs:
        return "no runs yet"
    rows = [["RUN ID", "PIPELINE", "STARTED", "DURATION", "EXECUTED", "CACHED", "FAILED", "STATUS"]]
    for r in runs:
        rows.append([r["id"], r["pipeline"], when(r["started"]), _dur(r["duration_s"]),
                     str(r["executed"]), str(r["cached"]), str(r["failed"]), r["status"]])
    return "\n".join(_table(rows))


def run_text(run: Dict[str, Any], log: bool = False) -> str:
    counts = ", ".join(f"{run[k]} {k}" for k in ("executed", "cached", "failed", "skipped")
                       if run[k] or k in ("executed", "cached"))
    lines = [
        f"run {run['id']}: pipeline {run['pipeline']}, {run['status']}",
        f"started {when(run['started'])}, took {_dur(run['duration_s'])}; {counts}",
    ]
    if run["params"]:
        lines.append("params: " + ", ".join(f"{k}={v!r}" for k, v in run["params"].items()))
    rows = [["STEP", "STATUS", "DURATION", "REASONS"]]
    for s in run["steps"]:
        dur = f"{s['duration']:.3f}s" if s["status"] in ("executed", "failed") else "-"
        detail = "; ".join(s["reasons"])
        if s["status"] == "failed" and s["error"]:
            detail = (detail + "; " if detail else "") + "error: " + s["error"].strip().splitlines()[-1]
        rows.append([s["step"], s["status"], dur, detail])
    lines += ["  " + x for x in _table(rows)]
    if log:
        lines += ["", "log:", run["log"] or "(empty)"]
    return "\n".join(lines)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2)
