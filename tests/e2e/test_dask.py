"""End-to-end: `--executor dask` on a real LocalCluster of worker processes gives the same
statuses and outputs as the local executor, and reports a failing step with its traceback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import TICK, Project, sqlite_db

from zenbuild.result import StepResult

PIPE = '''
import os
import time

from zenbuild import File, Output, pipeline, step
from ticker import tick

HERE = os.path.dirname(os.path.abspath(__file__))


def _meet(me, other):  # os.access: the handshake is plumbing, not an input (os.stat is recorded)
    open(os.path.join(HERE, f"{me}.start"), "w").close()
    deadline = time.time() + float(os.environ.get("ZB_MEET_S", "60"))  # 0 for a serial run
    while time.time() < deadline and not os.access(os.path.join(HERE, f"{other}.start"), os.F_OK):
        time.sleep(0.01)
    try:
        from distributed import get_worker

        get_worker()
        in_dask = True
    except (ImportError, ValueError):
        in_dask = False
    return [os.getpid(), in_dask]


@step
def load(src: File) -> list:
    tick("load")
    return src.read_text().split()


@step
def left(words: list) -> dict:
    tick("left")
    return {"first": words[0], "pid": _meet("left", "right")}


@step
def right(words: list) -> dict:
    tick("right")
    return {"last": words[-1], "pid": _meet("right", "left")}


@step
def report(a: dict, b: dict, out: Output) -> None:
    tick("report")
    out.write_text(f"{a['first']}..{b['last']}")


@step
def broken(a: dict) -> int:
    tick("broken")
    return {}["missing key"]


@step
def after_broken(x: int) -> int:
    tick("after_broken")
    return x


@pipeline
def dag():
    words = load(File("words.txt"))
    a, b = left(words), right(words)
    report(a, b, Output("build/report.txt"))
    after_broken(broken(a))
'''


def make(root: Path) -> Project:
    root.mkdir()
    p = Project(root)
    p.write("ticker.py", TICK)
    p.write("pipe.py", PIPE)
    p.write("words.txt", "one two three\n")
    p.write("zenbuild.toml", 'pipelines = ["pipe:dag"]\n')
    return p


def test_dask_matches_local(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    local = make(tmp_path / "local")
    r_local = local.run("run", "--keep-going", "--json", check=1,  # serial, in-process
                        env={"ZB_MEET_S": "0"})
    remote = make(tmp_path / "dask")
    r = remote.run("run", "--executor", "dask", "-j", "2", "--keep-going", "--json", check=1)

    def by_name(res) -> dict:  # type: ignore[no-untyped-def]
        return {s["name"]: s["status"] for s in json.loads(res.stdout)["steps"]}

    assert by_name(r) == by_name(r_local)
    assert by_name(r) == {
        "load": "executed", "left": "executed", "right": "executed", "report": "executed",
        "broken": "failed", "after_broken": "skipped"}
    assert remote.read("build/report.txt") == local.read("build/report.txt") == "one..three"
    assert sorted(remote.ticks()) == ["broken", "left", "load", "report", "right"]
    # the failing step's traceback, with the user's line, came back from the worker
    assert "KeyError: 'missing key'" in r.stderr and 'return {}["missing key"]' in r.stderr
    # left and right waited for each other, so they ran at once in two worker processes
    store = str(remote.root / ".zenbuild")
    with sqlite_db(os.path.join(store, "zenbuild.db")) as c:
        vd = dict(c.execute("SELECT step, value_digest FROM actions").fetchall())
    got = [StepResult(n, "cached", value_digest=vd[n], store_path=store).output["pid"]
           for n in ("left", "right")]
    assert got[0][1] and got[1][1]  # both ran inside Dask workers
    assert got[0][0] != got[1][0]  # two different worker processes
    # and the results are ordinary cache entries: a local run serves them
    again = remote.run("run", "--keep-going", check=1)
    assert sorted(again.cached) == ["left", "load", "report", "right"]
    assert again.executed == []


def test_missing_dask_names_the_extra(project: Project, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "distributed.py").write_text("raise ImportError('no distributed here')\n")
    project.write("pipe.py", PIPE)
    project.write("words.txt", "one two three\n")
    project.write("zenbuild.toml", 'pipelines = ["pipe:dag"]\n')
    r = project.run("run", "--executor", "dask", check=2,
                    env={"PYTHONPATH": str(shim)})
    assert "zenbuild[dask]" in r.stderr
    assert project.ticks() == []


def test_a_cached_run_never_imports_dask(project: Project, tmp_path: Path) -> None:
    """Importing Dask's client costs 1-2 s: a run with nothing to execute must not pay it
    (an import of this shim would fail the run)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "distributed.py").write_text("raise ImportError('imported for nothing')\n")
    project.write("words.txt", "one two three\n")
    project.write("zenbuild.toml", 'pipelines = ["pipe:simple_ok"]\n')
    project.write("pipe.py", SIMPLE_OK)
    project.run("run")
    r = project.run("run", "--executor", "dask", env={"PYTHONPATH": str(shim)})
    assert sorted(r.cached) == ["count", "double"] and r.executed == []


SIMPLE_OK = '''
from zenbuild import File, pipeline, step


@step
def count(src: File) -> int:
    return len(src.read_text().split())


@step
def double(n: int) -> int:
    return 2 * n


@pipeline
def simple_ok():
    double(count(File("words.txt")))
'''

SIMPLE = '''
from zenbuild import File, Output, pipeline, step


@step
def where(src: File, out: Output) -> str:
    from distributed import get_worker

    address = get_worker().address
    out.write_text(src.read_text().upper())
    return address


@pipeline
def simple():
    where(File("words.txt"), Output("build/upper.txt"))
'''


@contextlib.contextmanager
def external_cluster(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and a `dask worker` started as the docs say, on this machine (so the
    project is at the same path on the worker); yields the scheduler's address."""
    sched_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask.log"
    procs: list = []
    with open(logs, "w") as log:
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                 "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                stdout=log, stderr=log))
            deadline = time.time() + 60
            while not sched_file.exists() or not sched_file.read_text().strip():
                assert time.time() < deadline, logs.read_text()
                time.sleep(0.05)
            address = json.loads(sched_file.read_text())["address"]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                 "--nthreads", "1", "--no-dashboard"], stdout=log, stderr=log))
            yield address
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)


def test_external_scheduler(tmp_path: Path) -> None:
    """--scheduler tcp://HOST:PORT: the step runs on the external worker."""
    pytest.importorskip("distributed")
    with external_cluster(tmp_path) as address:
        p = make(tmp_path / "proj")
        p.write("pipe.py", SIMPLE)
        p.write("zenbuild.toml", 'pipelines = ["pipe:simple"]\n')
        r = p.run("run", "--executor", "dask", "--scheduler", address)
        assert r.executed == ["where"]
        assert p.read("build/upper.txt") == "ONE TWO THREE\n"
        store = str(p.root / ".zenbuild")
        with sqlite_db(os.path.join(store, "zenbuild.db")) as c:
            vd = c.execute("SELECT value_digest FROM actions").fetchone()[0]
        worker = StepResult("where", "cached", value_digest=vd, store_path=store).output
        assert worker.startswith("tcp://127.0.0.1:")  # it ran on the external worker


EDITED = '''
from zenbuild import pipeline, step
from shout import shout


@step
def greet(name: str) -> str:
    return shout(name)


@step
def show(text: str) -> str:
    print(f"text={text}")
    return text


@pipeline
def edited(name: str = "ada"):
    show(greet(name))
'''


def test_a_running_worker_imports_edited_modules_again(tmp_path: Path) -> None:
    """A worker serves run after run: it must not keep the helpers (or steps) of an earlier
    run. Editing a helper module reruns the step on the new helper; editing the step itself
    runs the new step (not "the code in the worker differs")."""
    pytest.importorskip("distributed")
    with external_cluster(tmp_path) as address:
        p = make(tmp_path / "proj")
        p.write("pipe.py", EDITED)
        p.write("shout.py", "def shout(s):\n    return s.upper()\n")
        p.write("zenbuild.toml", 'pipelines = ["pipe:edited"]\n')
        run = ("run", "--executor", "dask", "--scheduler", address)
        assert "text=ADA" in p.run(*run).output
        p.write("shout.py", "def shout(s):\n    return s.upper() + '!'\n")
        r = p.run(*run)
        assert r.executed == ["greet", "show"] and "text=ADA!" in r.output, r
        p.write("pipe.py", EDITED.replace("return shout(name)", "return shout(name) * 2"))
        r = p.run(*run)
        assert r.executed == ["greet", "show"] and "text=ADA!ADA!" in r.output, r


STATEFUL = '''
from zenbuild import pipeline, step
import loaders


@step
def cfg() -> int:
    return loaders.CFG["k"]


@step
def data() -> int:
    return loaders.load("data.txt")


@step
def show(a: int, b: int) -> str:
    print(f"values={a},{b}")
    return f"{a},{b}"


@pipeline
def stateful():
    show(cfg(), data())
'''

LOADERS = '''
import functools
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))  # the worker's cwd is its own

with open(os.path.join(HERE, "params.json")) as f:  # read when the module is imported
    CFG = json.load(f)


@functools.lru_cache(maxsize=None)
def load(path):
    with open(os.path.join(HERE, path)) as f:
        return int(f.read())
'''


def test_a_running_worker_forgets_what_modules_read_and_memoized_in_an_earlier_run(
        tmp_path: Path) -> None:
    """A worker that outlives runs imports the project's modules again for each run, as a new
    process would: a config read at import and an lru_cache loader's content are not the
    previous run's (the import-time value was computed stale and cached; the memo made its
    step rerun on every run with the old value)."""
    pytest.importorskip("distributed")
    with external_cluster(tmp_path) as address:
        p = make(tmp_path / "proj")
        p.write("pipe.py", STATEFUL)
        p.write("loaders.py", LOADERS)
        p.write("params.json", '{"k": 1}')
        p.write("data.txt", "1")
        p.write("zenbuild.toml", 'pipelines = ["pipe:stateful"]\n')
        run = ("run", "--executor", "dask", "--scheduler", address)
        assert "values=1,1" in p.cli(*run).output
        p.write("params.json", '{"k": 5}')
        p.write("data.txt", "5")
        r = p.cli(*run)
        assert sorted(r.executed) == ["cfg", "data", "show"] and "values=5,5" in r.output, r
        r = p.cli(*run)
        assert r.executed == [] and sorted(r.cached) == ["cfg", "data", "show"], r


TRACED_STEPS = '''
import os

from helpers_zb import scale


def traced(path):
    with open(path) as f:
        n = int(f.read())
    with open(os.path.join(os.path.dirname(path), "side.txt"), "w") as f:
        f.write("undeclared")
    return [scale(n) if os.environ.get("ZB_DASK_MODE") == "x2" else n, os.getpid()]
'''


def test_the_local_cluster_leaves_the_dashboard_port_to_others(tmp_path: Path) -> None:
    """The LocalCluster's scheduler serves its HTTP routes (no dashboard) on a free loopback
    port, not on Dask's default 8787: a run beside another cluster that holds 8787 neither
    warns (an error under this suite's filterwarnings, a stray line for a user) nor takes the
    port from a cluster started after it."""
    pytest.importorskip("distributed")
    from zenbuild.executors.dask_executor import DaskExecutor

    ex = DaskExecutor(str(tmp_path), jobs=1)
    try:
        ex._get_client()
        http = ex._cluster.scheduler.http_server
        assert http.address == "127.0.0.1" and http.port != 8787
    finally:
        ex.close()


def test_the_trace_comes_back_from_dask_workers(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A step run on a real LocalCluster worker process returns its dynamic trace: the file it
    read, the file it wrote without declaring it, the variable it read and the project helper
    it called, all recorded in the worker."""
    pytest.importorskip("distributed")
    import importlib

    from zenbuild.executors import Task
    from zenbuild.executors.dask_executor import DaskExecutor
    from zenbuild.trace import TraceOptions

    root = tmp_path / "proj"
    root.mkdir()
    (root / "traced_steps_zb.py").write_text(TRACED_STEPS)
    (root / "helpers_zb.py").write_text("def scale(n):\n    return n * 2\n")
    (root / "n.txt").write_text("21")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("ZB_DASK_MODE", "x2")  # the workers inherit it
    mod = importlib.import_module("traced_steps_zb")
    opts = TraceOptions(str(root), str(root / ".zenbuild"), (), trace_calls=True)
    ex = DaskExecutor(str(root), jobs=1)
    try:
        ex.submit(Task("traced", mod.traced, (str(root / "n.txt"),), {}, opts))
        [outcome] = ex.wait()
    finally:
        ex.close()
        sys.modules.pop("traced_steps_zb", None)
        sys.modules.pop("helpers_zb", None)
    assert outcome.ok, outcome.error
    assert outcome.value[0] == 42 and outcome.trace is not None
    assert outcome.value[1] != os.getpid()  # it ran in a worker process
    t = outcome.trace
    assert t.reads == ["n.txt"] and t.writes == ["side.txt"]
    assert t.env == {"ZB_DASK_MODE": "x2"}
    assert t.calls == [["helpers_zb.py", "scale", 1], ["traced_steps_zb.py", "traced", 7]]


WORKER_EXECUTORS = [["-j", "2"], ["--executor", "dask"]]


def _bad_beside_good(project: Project, executor: list, bad_body: str) -> Any:
    """Run a pipeline of a step ``bad`` (``bad_body``) and a step ``good`` under ``executor``:
    bad must fail alone, good must execute (exit 1)."""
    if executor[0] == "--executor":
        pytest.importorskip("distributed")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", f"""
        import threading
        from zenbuild import pipeline, step

        @step
        def bad() -> object:
            {bad_body}

        @step
        def good() -> int:
            return 7

        @pipeline
        def p():
            bad()
            good()
    """)
    r = project.run("run", *executor, check=1, timeout=120)
    assert r.executed == ["good"] and "1 executed, 0 cached, 1 failed" in r.output, r
    return r


@pytest.mark.parametrize("executor", WORKER_EXECUTORS)
def test_a_value_that_cannot_leave_the_worker_fails_its_step_once_and_clearly(
        project: Project, executor: list) -> None:
    # Dask used to log 200 lines of serialization tracebacks and print no summary
    r = _bad_beside_good(project, executor, "return threading.Lock()")
    assert ("step bad returned a value that cannot be sent back from the worker: TypeError: "
            "cannot pickle '_thread.lock' object") in r.output, r
    assert "Traceback" not in r.output, r


@pytest.mark.parametrize("executor", WORKER_EXECUTORS)
def test_a_step_raising_keyboardinterrupt_in_a_worker_fails_that_step(
        project: Project, executor: list) -> None:
    r = _bad_beside_good(project, executor, "raise KeyboardInterrupt")
    assert "step bad raised KeyboardInterrupt in its worker process" in r.output, r
