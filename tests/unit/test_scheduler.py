"""scheduler: the walk driven by a fake executor that chooses the order of completion, the
dry-run overlay, the inputs-changed check, and what a no-op costs (parses and store rows)."""

from __future__ import annotations

import ast
import importlib
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from zenbuild import Dir, File, Output, pipeline, step
from zenbuild import reasons as R
from zenbuild.config import load_config
from zenbuild.events import (
    Event,
    Reporter,
    StepCached,
    StepErrored,
    StepFinished,
    StepSkipped,
    StepStarted,
    WouldExecute,
)
from zenbuild.executors import Executor, Outcome, Task, call_task
from zenbuild.reasons import Reason, kinds
from zenbuild.scheduler import RunOptions, Scheduler
from zenbuild.states import StepStatus
from zenbuild.store.db import Store


class Calls:
    """What the steps executed. A class, not a module-level list: a list's value is part of
    the fingerprint of the code that uses it (and it changes as steps run)."""

    log: List[str] = []


class Recording(Reporter):
    def __init__(self) -> None:
        self.events: List[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def seen(self, *types: type) -> List[Tuple[str, str]]:
        return [(type(e).__name__, e.step) for e in self.events if isinstance(e, types)]


class LastInFirstOut(Executor):
    """Holds every submitted task; each wait() completes the most recently submitted one
    first, so a step submitted second finishes before the one submitted first."""

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self.pending: List[Task] = []
        self.waits: List[List[str]] = []  # what was pending at each wait()

    def submit(self, task: Task) -> None:
        self.pending.append(task)

    def wait(self) -> List[Outcome]:
        self.waits.append([t.name for t in self.pending])
        return [call_task(self.pending.pop())]


@step
def left(n: int) -> int:
    Calls.log.append("left")
    return n * 10


@step
def right(n: int) -> int:
    Calls.log.append("right")
    if n < 0:
        raise ValueError("negative")
    return n + 1


@step
def join(a: int, b: int) -> Tuple[int, int]:
    Calls.log.append("join")
    return (a, b)


@pipeline
def diamond(x: int = 1, y: int = 2):
    join(left(x), right(y))


def project(tmp_path: Path) -> Any:
    (tmp_path / "zenbuild.toml").write_text("")
    return load_config(str(tmp_path), str(tmp_path / "zenbuild.toml"))


def walk(config: Any, bound: Any, executor: Optional[Executor] = None,
         **opts: Any) -> Tuple[Any, Recording]:
    rep = Recording()
    store = Store(config.store)
    try:
        result = Scheduler(bound.trace(config.root), config, store, executor or LastInFirstOut(),
                           rep, RunOptions(**opts)).run()
    finally:
        store.close()
    return result, rep


def test_completion_out_of_submission_order(tmp_path: Path) -> None:
    config = project(tmp_path)
    Calls.log.clear()
    ex = LastInFirstOut()
    result, rep = walk(config, diamond(3, 4), ex)
    assert ex.waits == [["left", "right"], ["left"], ["join"]]  # both ran at once
    assert Calls.log == ["right", "left", "join"]  # the second submitted finished first
    assert rep.seen(StepStarted, StepFinished) == [
        ("StepStarted", "left"), ("StepStarted", "right"), ("StepFinished", "right"),
        ("StepFinished", "left"), ("StepStarted", "join"), ("StepFinished", "join")]
    assert list(result.steps) == ["left", "right", "join"]  # results in topological order
    assert {n: s.status for n, s in result.steps.items()} == {
        "left": StepStatus.EXECUTED, "right": StepStatus.EXECUTED, "join": StepStatus.EXECUTED}
    assert result["join"].output == (30, 5)
    assert [kinds(s.reasons) for s in result.steps.values()] == [[R.NEVER_BUILT]] * 3
    # again: all cached, nothing submitted
    Calls.log.clear()
    ex = LastInFirstOut()
    result, rep = walk(config, diamond(3, 4), ex)
    assert Calls.log == [] and ex.waits == []
    assert rep.seen(StepCached) == [("StepCached", n) for n in ("left", "right", "join")]
    assert [s.reasons for s in result.steps.values()] == [[Reason(R.UP_TO_DATE)]] * 3


def test_a_failure_completing_first_skips_the_join_and_lets_the_other_finish(tmp_path: Path) -> None:
    config = project(tmp_path)
    Calls.log.clear()
    result, rep = walk(config, diamond(5, -1))
    assert Calls.log == ["right", "left"]  # right fails first; left, already running, still finishes
    assert {n: s.status for n, s in result.steps.items()} == {
        "left": "executed", "right": "failed", "join": "skipped"}
    assert "ValueError: negative" in (result["right"].error or "")
    assert result["join"].reasons == [Reason(R.UPSTREAM_FAILED, "right")]
    assert rep.seen(StepErrored, StepSkipped) == [("StepErrored", "right"), ("StepSkipped", "join")]
    assert result.status == "failed"
    # left's result was stored although the run failed: only right runs again (and join)
    Calls.log.clear()
    walk(config, diamond(5, 6))
    assert Calls.log == ["right", "join"]


def test_dry_run_of_a_pending_upstream_is_one_decision(tmp_path: Path) -> None:
    config = project(tmp_path)
    walk(config, diamond(1, 2))
    Calls.log.clear()
    result, rep = walk(config, diamond(1, 3), dry_run=True)
    assert Calls.log == []
    assert result["right"].reasons == [Reason(R.PARAM_CHANGED, "n", "2", "3")]
    assert result["join"].reasons == [Reason(R.UPSTREAM_PENDING, "right")]  # first reason only
    result, _ = walk(config, diamond(1, 3), dry_run=True, all_reasons=True)
    assert result["join"].reasons == [Reason(R.UPSTREAM_PENDING, "right", detail={"arg": "b"})]
    assert result["join"].status == StepStatus.WOULD_EXECUTE
    assert rep.seen(WouldExecute) == [("WouldExecute", "right"), ("WouldExecute", "join")]


# -- outputs, folders and the dry-run overlay ---------------------------------------------------
@step
def make(out: Output) -> None:
    Calls.log.append("make")
    out.write_text("made")


@step
def use(made: File, big: File) -> int:
    Calls.log.append("use")
    return len(made.read_text()) + len(big.read_bytes())


@pipeline
def produce():
    make(Output("build/made.txt"))
    use(File("build/made.txt"), File("big.bin"))


def test_a_restorable_output_is_seen_through_the_overlay_without_rehashing_other_inputs(
        tmp_path: Path) -> None:
    config = project(tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 300_000)
    os.utime(big, (1_000_000_000, 1_000_000_000))  # old: its stat-cache record is trusted
    walk(config, produce())
    (tmp_path / "build/made.txt").write_text("edited by hand")
    Calls.log.clear()
    store = Store(config.store)
    rep = Recording()
    try:
        sched = Scheduler(produce().trace(config.root), config, store, LastInFirstOut(), rep,
                          RunOptions(dry_run=True, all_reasons=True))
        result = sched.run()
    finally:
        store.close()
    assert Calls.log == []
    assert result["make"].reasons == [Reason(R.OUTPUT_RESTORE, "build/made.txt")]
    assert result["use"].reasons == [Reason(R.UP_TO_DATE)]  # it sees what a run would restore
    assert sched.server.overlay.files["build/made.txt"][1] == 4
    # only the edited output was hashed (to find it differs), not the 300 kB input beside it
    assert sched.statcache.hashed_bytes == len("edited by hand")
    assert (tmp_path / "build/made.txt").read_text() == "edited by hand"  # a dry run changes nothing


@step
def scan(d: Dir) -> List[str]:
    Calls.log.append("scan")
    names = sorted(p.name for p in d.iterdir())
    (d / "late.txt").write_text("added while the step ran")  # the folder changes under it
    return names


@pipeline
def scanning():
    scan(Dir("data"))


def test_a_file_added_to_a_dir_input_while_the_step_runs_keeps_the_result_out_of_the_cache(
        tmp_path: Path) -> None:
    config = project(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.txt").write_text("a")
    Calls.log.clear()
    result, rep = walk(config, scanning())
    assert result["scan"].output == ["a.txt"]  # the result is used
    [done] = [e for e in rep.events if isinstance(e, StepFinished)]
    assert done.uncached_reason == Reason(R.DIR_CHANGED_DURING, "data", detail={"step": "scan"})
    assert R.text(done.uncached_reason) == (
        "input folder data changed while step scan ran; its result was used but not cached")
    # the folder as it was when the step started: no entry was stored for it, so it executes
    (tmp_path / "data/late.txt").unlink()
    walk(config, scanning())
    assert Calls.log == ["scan", "scan"]


# -- what a no-op costs -------------------------------------------------------------------------
NOOP_PIPE = '''
from zenbuild import File, pipeline, step


def helper(text):
    return text.upper()


@step
def load(src: File) -> str:
    return helper(src.read_text())


@step
def count(text: str, n: int) -> int:
    return len(text) * n


@pipeline
def p():
    count(load(File("in.txt")), 3)
'''


def test_a_no_op_parses_no_source_and_writes_one_row(tmp_path: Path, monkeypatch: Any) -> None:
    from zenbuild.events import Reporter as Base
    from zenbuild.run import run_bound

    name = f"noop_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / "zenbuild.toml").write_text(f'pipelines = ["{name}:p"]\n')
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NOOP_PIPE))
    (tmp_path / "in.txt").write_text("hello")
    for f in ("in.txt", f"{name}.py"):  # old files: their stat-cache records are trusted
        os.utime(tmp_path / f, (1_000_000_000, 1_000_000_000))
    import subprocess

    subprocess.run([sys.executable, "-m", "zenbuild", "run", "--project-dir", str(tmp_path)],
                   check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    parses: List[str] = []
    real_parse = ast.parse

    def spy(source: Any, filename: Any = "<unknown>", *a: Any, **kw: Any) -> Any:
        parses.append(str(filename))
        return real_parse(source, filename, *a, **kw)

    monkeypatch.setattr(ast, "parse", spy)
    changes: List[int] = []
    real_close = Store.close

    def close(self: Store) -> None:
        changes.append(self.db.total_changes)
        real_close(self)

    monkeypatch.setattr(Store, "close", close)

    class Quiet(Base):
        def handle(self, event: Any) -> None:
            pass

    rows_before = table_rows(config_store(tmp_path))
    result = run_bound(mod.p(), config=load_config(str(tmp_path), str(tmp_path / "zenbuild.toml")),
                       reporter=Quiet())
    assert {n: s.status for n, s in result.steps.items()} == {"load": "cached", "count": "cached"}
    assert parses == []  # nothing parsed: every code fingerprint came from the store's cache
    assert changes == [2]  # the run's history row: inserted when it began, updated at its end
    after = table_rows(config_store(tmp_path))
    assert {t: after[t] - rows_before[t] for t in after if after[t] != rows_before[t]} == {"runs": 1}
    sys.modules.pop(name, None)


def config_store(root: Path) -> str:
    return load_config(str(root), str(root / "zenbuild.toml")).store


def table_rows(store_path: str) -> Dict[str, int]:
    import sqlite3

    dbs = [f for f in os.listdir(store_path) if f.endswith((".db", ".sqlite"))]
    assert len(dbs) == 1, dbs
    con = sqlite3.connect(os.path.join(store_path, dbs[0]))
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


@pytest.fixture(autouse=True)
def _fresh_calls() -> Any:
    Calls.log.clear()
    yield
    Calls.log.clear()


# -- cache controls (issue 14): the clock is RunOptions.now, never a sleep ---------------------
class Probe:
    """The external state a version probe reports; ``error`` makes the probe raise."""

    etag: Any = "e1"
    error: Optional[Exception] = None


def etag_probe(**_: Any) -> Any:
    if Probe.error is not None:
        raise Probe.error
    return Probe.etag


@step(cache_expires_after="1h", version=etag_probe)
def source(n: int) -> int:
    Calls.log.append("source")
    return n


@step
def double(v: int) -> int:
    Calls.log.append("double")
    return 2 * v


@pipeline
def refreshed(n: int = 1):
    double(source(n))


def test_expiry_rerun_and_probes_in_the_walk(tmp_path: Path) -> None:
    config = project(tmp_path)
    Calls.log.clear()
    Probe.etag, Probe.error = "e1", None
    t0 = 1_800_000_000.0
    walk(config, refreshed(), now=t0)
    assert Calls.log == ["source", "double"]
    for now, log in ((t0 + 3599, []), (t0 + 3601, ["source"]), (t0 + 3601 + 1800, [])):
        Calls.log.clear()
        result, _ = walk(config, refreshed(), now=now)
        assert Calls.log == log, now
    assert kinds(walk(config, refreshed(), now=t0 + 9000, dry_run=True, all_reasons=True)[0]
                 ["source"].reasons) == [R.EXPIRED]
    Calls.log.clear()
    result, rep = walk(config, refreshed(), now=t0 + 3601, rerun=["source"])
    assert Calls.log == ["source"]  # the same value: double stays cached
    assert kinds(result["source"].reasons) == [R.FORCED_RERUN]
    Probe.etag = {"etag": "e2"}
    Calls.log.clear()
    result, _ = walk(config, refreshed(), now=t0 + 3601)
    assert Calls.log == ["source"]
    assert result["source"].reasons == [Reason(R.VERSION_CHANGED, "version", "e1", {"etag": "e2"})]
    Probe.error = OSError("unreachable")
    Calls.log.clear()
    result, rep = walk(config, refreshed(), now=t0 + 3601)
    assert Calls.log == ["source"] and result.status == "succeeded"
    assert [e.message for e in rep.events if type(e).__name__ == "Warning_"] == [
        "the version probe of step source failed: OSError: unreachable; the step executes"]
    assert kinds(result["source"].reasons)[0] == R.PROBE_FAILED
    Probe.error = None


class ElsewhereStore(LastInFirstOut):
    """A worker that says it wrote the value into a store this process does not see."""

    def wait(self) -> List[Outcome]:
        from zenbuild.store.blobs import StoredValue

        out = super().wait()
        for o in out:
            if o.name == "right":
                o.value = StoredValue("ab" * 16, 1 << 20)
        return out


def test_a_value_stored_where_this_process_cannot_see_fails_its_step(tmp_path: Path) -> None:
    Calls.log.clear()
    result, _ = walk(project(tmp_path), diamond(7, 8), ElsewhereStore())
    assert {n: s.status for n, s in result.steps.items()} == {
        "left": "executed", "right": "failed", "join": "skipped"}
    assert "does not see (the workers need the store at the same path)" in (
        result["right"].error or "")


def test_a_run_leaves_nothing_for_the_cyclic_gc(tmp_path: Path) -> None:
    """Once a walk (cold, then a no-op) is over and its result dropped, the scheduler and the
    graph are freed by reference counting: a cycle through them (a bound method kept by a
    cache, an exception's traceback holding the frames above it) kept a whole run's state
    alive until the cyclic GC ran, which cost a run of 5,000 steps ~100-250 ms."""
    import gc
    import weakref

    config = project(tmp_path)
    ran = []
    for _ in range(2):  # cold (a new store: its schema is made), then all cached
        Calls.log.clear()
        store = Store(config.store)
        graph = diamond(3, 4).trace(config.root)
        sched = Scheduler(graph, config, store, LastInFirstOut(), Recording(), RunOptions())
        alive = [weakref.ref(sched), weakref.ref(graph), weakref.ref(sched.statcache)]
        was = gc.isenabled()
        gc.disable()  # only reference counting may free them
        try:
            result = sched.run()
            store.close()
            del sched, graph, result
            assert [r() for r in alive] == [None, None, None]
        finally:
            if was:
                gc.enable()
        ran.append(list(Calls.log))
    assert ran == [["right", "left", "join"], []]


def test_opening_a_new_store_keeps_no_frame_alive(tmp_path: Path) -> None:
    """Making a store's schema meets SQLite errors on the way (no table yet); re-raising one
    must leave no cycle through its traceback that keeps the caller's frame, and so its locals
    (a run's graph), alive after it returned."""
    import gc
    import weakref

    class Marker:
        pass

    def opens(where: str) -> Any:
        mine = Marker()
        Store(where).close()
        return weakref.ref(mine)

    was = gc.isenabled()
    gc.disable()
    try:
        assert opens(str(tmp_path / "st"))() is None
    finally:
        if was:
            gc.enable()


def test_a_run_closes_its_store_when_closing_its_executor_raises(tmp_path, monkeypatch) -> None:
    """run_bound's clean-up runs each part even when one raises: the store (its connection and
    the workspace lock) is closed after an executor whose close() failed."""
    import zenbuild.run as run_mod
    from zenbuild import pipeline, step
    from zenbuild.store.db import Store

    (tmp_path / "zenbuild.toml").write_text("")

    @step
    def one() -> int:
        return 1

    @pipeline
    def p():
        one()

    closed = []
    real_close = Store.close

    def close(self) -> None:
        closed.append(self.path)
        real_close(self)

    monkeypatch.setattr(Store, "close", close)

    class Broken:
        slots = 1

        def close(self) -> None:
            raise RuntimeError("executor close failed")

    def broken_execution(config, store, reporter, executor, *a, **k):
        return Broken(), None

    import zenbuild.executors.choose as choose
    monkeypatch.setattr(choose, "execution_for", broken_execution)
    with pytest.raises(RuntimeError, match="executor close failed"):
        run_mod.run_bound(p(), config=load_config(str(tmp_path), None))
    assert closed  # the store was closed all the same
    Store(str(tmp_path / ".zenbuild")).close()  # and its lock is free: a new one opens
