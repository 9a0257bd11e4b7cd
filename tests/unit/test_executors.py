"""Unit: choosing an executor, and finding step functions again by module and qualname."""

from __future__ import annotations

import sys
import types

import pytest

from zenbuild import step
from zenbuild.errors import ConfigError
from zenbuild.executors import InProcessExecutor
from zenbuild.executors.choose import choose_executor
from zenbuild.executors.process import (
    NotImportable,
    ProcessExecutor,
    cpu_count,
    fn_ref,
    resolve_ref,
    run_ref,
)


@step
def top_level(x: int) -> int:
    print("printed", x)
    return x * 2


def test_choose_executor() -> None:
    assert isinstance(choose_executor("/r"), InProcessExecutor)
    assert isinstance(choose_executor("/r", jobs=1), InProcessExecutor)
    ex = choose_executor("/r", jobs=3)
    assert isinstance(ex, ProcessExecutor) and ex.slots == 3
    assert choose_executor("/r", jobs=0).slots == cpu_count()
    with pytest.raises(ConfigError, match="only applies with --executor dask"):
        choose_executor("/r", scheduler="tcp://x:1")
    with pytest.raises(ConfigError, match="unknown executor"):
        choose_executor("/r", kind="ray")


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"zenbuild\[dask\]"):
        choose_executor("/r", kind="dask")


def test_refs_resolve_to_the_plain_function() -> None:
    ref = fn_ref(top_level.fn)
    assert (ref.module, ref.qualname) == (__name__, "top_level")
    assert resolve_ref(ref, "/nonexistent") is top_level.fn
    outcome, text = run_ref("top_level", ref, "/nonexistent", (21,), {}, capture="py")
    assert outcome.ok and outcome.value == 42 and text == "printed 21\n"


def test_nested_functions_are_not_importable() -> None:
    def inner() -> None:
        pass

    with pytest.raises(NotImportable, match="not a module-level function"):
        fn_ref(inner)
    with pytest.raises(NotImportable):
        fn_ref(lambda: None)


def test_changed_code_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("zb_fake_mod")
    exec("def f():\n    return 1\n", mod.__dict__)
    monkeypatch.setitem(sys.modules, "zb_fake_mod", mod)
    ref = fn_ref(mod.f)
    exec("def f():\n    return 2\n", mod.__dict__)  # the file was edited under the run
    outcome, _ = run_ref("f", ref, "/nonexistent", (), {}, capture="py")
    assert not outcome.ok and "differs from the code that was fingerprinted" in outcome.error


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_process_executor_runs_in_workers(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    import zenbuild.executors.process as process
    from zenbuild.executors import Task

    monkeypatch.setattr(process, "start_method", lambda: method)
    printed: list = []
    ex = ProcessExecutor(2, "/nonexistent", on_output=lambda name, text: printed.append((name, text)))
    try:
        ex.submit(Task("a", top_level.fn, (1,), {}))
        ex.submit(Task("b", top_level.fn, (2,), {}))
        outcomes = ex.wait()
        while len(outcomes) < 2:
            outcomes += ex.wait()
    finally:
        ex.close()
    assert sorted((o.name, o.ok, o.value) for o in outcomes) == [("a", True, 2), ("b", True, 4)]
    assert sorted(printed) == [("a", "printed 1\n"), ("b", "printed 2\n")]


def test_a_task_cancelled_with_a_broken_pool_is_a_failed_outcome(tmp_path) -> None:
    """A future cancelled when a broken pool is shut down must not crash wait()."""
    import concurrent.futures as cf

    from zenbuild.executors.process import ProcessExecutor

    ex = ProcessExecutor(2, str(tmp_path))
    fut: cf.Future = cf.Future()
    fut.cancel()
    fut.set_running_or_notify_cancel()
    ex._futures[fut] = "queued"
    outcomes = ex.wait()
    assert [o.name for o in outcomes] == ["queued"] and not outcomes[0].ok
    assert "a worker process died" in outcomes[0].error
    ex.close()


def test_discarding_a_broken_pool_fails_its_outstanding_tasks_without_waiting(tmp_path) -> None:
    import concurrent.futures as cf

    from zenbuild.executors.process import ProcessExecutor

    ex = ProcessExecutor(2, str(tmp_path))
    ex._get_pool()
    never: cf.Future = cf.Future()  # would block cf.wait forever
    ex._futures[never] = "beside"
    ex._discard_pool()
    outcomes = ex.wait()  # returns at once with the failure, no waiting on `never`
    assert [(o.name, o.ok) for o in outcomes] == [("beside", False)]
    assert not ex._futures
    ex.close()


def test_the_collector_is_paused_for_zenbuild_and_back_on_for_step_code(tmp_path) -> None:
    """run_bound pauses the cyclic garbage collector for its own work; a step's code runs
    with it on, as outside zenbuild; afterwards it is as it was (also when it was off)."""
    import gc

    from zenbuild import pipeline
    from zenbuild.events import Reporter
    from zenbuild.project import load_project
    from zenbuild.run import run_bound

    seen = {}

    @step
    def probe() -> bool:
        return gc.isenabled()

    @pipeline
    def p():
        probe()

    class Spy(Reporter):
        def handle(self, event: object) -> None:
            seen.setdefault("zenbuild", gc.isenabled())

    config = load_project(str(tmp_path))
    assert gc.isenabled()
    r = run_bound(p(), enable_cache=False, config=config, reporter=Spy())
    assert r.steps["probe"].output is True and seen["zenbuild"] is False
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that turned it off keeps it off, in its steps too
        r = run_bound(p(), enable_cache=False, config=config, reporter=Spy())
        assert r.steps["probe"].output is False and not gc.isenabled()
    finally:
        gc.enable()


@step
def reads_and_writes(src: str, scratch: str) -> str:
    import os

    with open(src) as f:
        text = f.read()
    with open(scratch, "w") as f:  # not a declared Output
        f.write("x")
    return text + (os.environ.get("ZB_EXEC_DEVICE") or "")


def _trace_task(tmp_path, name: str = "t"):  # type: ignore[no-untyped-def]
    from zenbuild.executors import Task
    from zenbuild.trace import TraceOptions

    (tmp_path / "in.txt").write_text("data-")
    opts = TraceOptions(str(tmp_path), str(tmp_path / ".zenbuild"), ("out.txt",),
                        trace_calls=True)
    return Task(name, reads_and_writes.fn, (str(tmp_path / "in.txt"),
                                            str(tmp_path / "scratch.txt")), {}, opts)


def test_the_trace_comes_back_from_the_in_process_executor(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ZB_EXEC_DEVICE", "cpu")
    ex = InProcessExecutor()
    ex.submit(_trace_task(tmp_path))
    [outcome] = ex.wait()
    assert outcome.ok and outcome.value == "data-cpu" and outcome.trace is not None
    assert outcome.trace.reads == ["in.txt"] and outcome.trace.writes == ["scratch.txt"]
    assert outcome.trace.env == {"ZB_EXEC_DEVICE": "cpu"}


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_the_trace_comes_back_from_worker_processes(tmp_path, monkeypatch, method: str) -> None:
    import json

    import zenbuild.executors.process as process

    monkeypatch.setattr(process, "start_method", lambda: method)
    monkeypatch.setenv("ZB_EXEC_DEVICE", "cuda")
    ex = ProcessExecutor(2, str(tmp_path))
    try:
        ex.submit(_trace_task(tmp_path, "w"))
        [outcome] = ex.wait()
    finally:
        ex.close()
    assert outcome.ok and outcome.value == "data-cuda" and outcome.trace is not None
    t = outcome.trace
    assert (t.reads, t.writes, t.env) == (["in.txt"], ["scratch.txt"],
                                          {"ZB_EXEC_DEVICE": "cuda"})
    assert t.calls_traced and t.calls == []  # the step's module is outside this root
    json.dumps(t.to_json())  # small and JSON-able, as the action entry stores it


def test_arguments_that_cannot_be_pickled_fail_the_step_not_the_run() -> None:
    from zenbuild.executors import Task

    ex = ProcessExecutor(2, "/nonexistent")
    try:
        ex.submit(Task("needs_lambda", top_level.fn, (lambda: 1,), {}))
        [outcome] = ex.wait()
    finally:
        ex.close()
    assert not outcome.ok and outcome.name == "needs_lambda"
    assert "its arguments cannot be sent to a worker process" in outcome.error
    assert "run with -j 1" in outcome.error
