"""Run history (tables ``runs`` and, for runs recorded by schema 3 and older, ``run_steps``):
what `zenbuild runs`, `zenbuild log` and the dashboard show."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.paths import storable
from zenbuild.reasons import to_json as reason_json
from zenbuild.reasons import unpack

# Run history kept in the store (`zenbuild runs`, the dashboard); older runs are forgotten.
RUNS_KEPT = 500

# One step of a finished run: (step, status, fingerprint, duration, reasons, error, records):
# reasons as text, records as reasons.pack() makes them (rows before records have six).
StepRow = Tuple[str, str, Optional[str], float, List[Any], Optional[str], List[Any]]

RUN_COLS = ("id", "pipeline", "started", "finished", "status", "executed", "cached", "failed",
             "skipped", "params")


class RunHistory:
    """Begin, finish, prune and list runs. ``clock`` gives the wall time in seconds."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def begin(self, pipeline: str, params: Dict[str, Any]) -> str:
        """A new run row. Runs of one store hold its workspace lock, so a row still "running"
        when another begins is a run that was killed: it is marked "interrupted"."""
        now = self.clock()
        self.db.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + os.urandom(3).hex()
        self.db.execute(
            "INSERT INTO runs (id, pipeline, started, status, params) VALUES (?,?,?,?,?)",
            (run_id, pipeline, now, "running", json.dumps(params, default=repr)),
        )
        return run_id

    def prune(self, keep: int = RUNS_KEPT) -> None:
        """Forget all but the newest ``keep`` runs (their steps and logs too)."""
        old = self.db.execute(
            "SELECT id FROM runs ORDER BY started DESC LIMIT -1 OFFSET ?", (keep,)
        ).fetchall()
        if old:
            ids = [(r[0],) for r in old]
            self.db.executemany("DELETE FROM run_steps WHERE run_id = ?", ids)  # schema < 4
            self.db.executemany("DELETE FROM runs WHERE id = ?", ids)

    def finish(
        self, run_id: str, status: str, counts: Dict[str, int], steps: List[StepRow], log: str = ""
    ) -> None:
        row = [
            self.clock(),
            status,
            counts.get("executed", 0),
            counts.get("cached", 0),
            counts.get("failed", 0),
            counts.get("skipped", 0),
            log,
            json.dumps([list(s) for s in steps]),  # paths in reasons: as JSON escapes
            run_id,
        ]
        sql = ("UPDATE runs SET finished=?, status=?, executed=?, cached=?, failed=?, skipped=?, "
               "log=?, steps=? WHERE id=?")
        try:
            self.db.execute(sql, row)
        except UnicodeEncodeError:  # the log names a file whose name is not UTF-8 ("Restored
            row[6] = storable(log)  # out/bad\udcffname.txt"): shown as its bytes, \xff
            self.db.execute(sql, row)

    def list(
        self, pipeline: Optional[str] = None, prefix: str = "", limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """Runs, newest first, optionally of one pipeline and/or whose id starts with ``prefix``."""
        sql = f"SELECT {', '.join(RUN_COLS)} FROM runs WHERE substr(id, 1, length(?)) = ?"
        args: List[Any] = [prefix, prefix]
        if pipeline is not None:
            sql += " AND pipeline = ?"
            args.append(pipeline)
        sql += " ORDER BY started DESC, id DESC LIMIT ?"
        args.append(-1 if limit is None else limit)
        rows = self.db.execute(sql, args).fetchall()
        out = [dict(zip(RUN_COLS, r)) for r in rows if sound_run(r)]
        for r in out:
            r["params"] = _json(r["params"], {}) if r["params"] else {}
        return out

    def log(self, run_id: str) -> str:
        row = self.db.execute("SELECT log FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row and type(row[0]) is str else ""

    def steps(self, run_id: str) -> List[Dict[str, Any]]:
        """The steps of one run in the order they were recorded."""
        row = self.db.execute("SELECT steps FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None and row[0] is not None:
            # a damaged row: the run's steps are not known
            rows = _json(row[0], []) if sound_steps(row[0]) else []
        else:  # recorded by a store of schema < 4 (or the run did not finish)
            rows = [
                [r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else [], r[5]]
                for r in self.db.execute(
                    "SELECT step, status, fingerprint, duration, reasons, error FROM run_steps "
                    "WHERE run_id = ? ORDER BY seq", (run_id,))
            ]
            rows = [r for r in rows if _sound_step(r)]
        return [
            {"step": r[0], "status": r[1], "fingerprint": r[2], "duration": r[3] or 0.0,
             "reasons": r[4] or [], "error": r[5],
             "reason_records": [unpack(k, t) for k, t in zip(r[6], r[4])] if len(r) > 6
             else [reason_json(t) for t in r[4] or []]}
            for r in rows
        ]


def _json(text: Any, default: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def sound_run(r: Tuple[Any, ...]) -> bool:
    """A runs row that can be shown: text that is text, times and counts that are numbers."""
    return (type(r[0]) is str and type(r[1]) is str and type(r[4]) is str
            and isinstance(r[2], (int, float)) and (r[3] is None or isinstance(r[3], (int, float)))
            and all(isinstance(n, int) or n is None for n in r[5:9])
            and (r[9] is None or type(r[9]) is str))


def sound_steps(text: Any) -> bool:
    """Whether a runs.steps column is readable: a JSON list of step rows."""
    rows = _json(text, None)
    return isinstance(rows, list) and all(_sound_step(r) for r in rows)


def _sound_step(r: Any) -> bool:
    return (isinstance(r, list) and len(r) >= 6 and type(r[0]) is str and type(r[1]) is str
            and (r[3] is None or isinstance(r[3], (int, float)))
            and isinstance(r[4] or [], list) and (len(r) < 7 or isinstance(r[6], list)))
