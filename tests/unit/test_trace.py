"""Unit: the dynamic-trace recorder (zenbuild.trace): files read and written, folders listed,
environment variables read, project functions executed; each exclusion; threads, nesting, the
hook inert outside a recording, the environment restored, the import-time mode."""

from __future__ import annotations

import importlib
import json
import linecache
import os
import pickle
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import zenbuild.trace as trace
from zenbuild.executors import Task, call_task
from zenbuild.trace import Recorder, Trace, TraceOptions, is_secret, recording_imports
from zenbuild.trace.calls import CallTracer


@pytest.fixture
def proj(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("a,b\n1,2\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    yield root
    assert not trace._ACTIVE  # every test leaves no recording behind


def opts(root: Path, **kw: Any) -> TraceOptions:
    kw.setdefault("store_dir", str(root / ".zenbuild"))
    return TraceOptions(str(root), **kw)


def slurp(path: Any) -> str:
    with open(path) as f:
        return f.read()


def record(root: Path, body: Any, **kw: Any) -> Trace:
    with Recorder(opts(root, **kw)) as r:
        body()
    assert r.trace is not None
    return r.trace


# -- files ---------------------------------------------------------------------------------------


def test_reads_by_open_os_open_pathlib_and_numpy(proj: Path) -> None:
    import numpy as np

    np.save(proj / "arr.npy", np.arange(3))

    def body() -> None:
        slurp(proj / "data" / "train.csv")
        os.close(os.open(str(proj / "params.yaml"), os.O_RDONLY))
        np.load(proj / "arr.npy")

    t = record(proj, body)
    assert t.reads == ["arr.npy", "data/train.csv", "params.yaml"] and t.writes == []
    assert t.reads_traced and t.started_ns > 0


def test_declared_inputs_and_outputs_are_not_looked_at(proj: Path) -> None:
    """A step's declared inputs (its static key covers them) and outputs are left out of its
    trace without a look at who opened them; a recording around it still hears of them."""
    def body() -> None:
        slurp(proj / "data" / "train.csv")  # declared
        slurp(proj / "params.yaml")  # not declared
        (proj / "out.txt").write_text("x")  # a declared output
        slurp(proj / "out.txt")

    declared = opts(proj, outputs=("out.txt",), inputs=frozenset({"data/train.csv"}))
    with Recorder(declared) as r:
        body()
    assert r.trace is not None
    assert r.trace.reads == ["params.yaml"] and r.trace.writes == []
    outer = record(proj, lambda: record(proj, body, outputs=("out.txt",),
                                        inputs=frozenset({"data/train.csv"})))
    assert outer.reads == ["data/train.csv", "params.yaml"] and outer.writes == ["out.txt"]


def test_relative_paths_follow_the_cwd(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(proj)

    def body() -> None:
        slurp("params.yaml")
        os.chdir("data")  # the cached cwd is dropped on chdir
        slurp("./train.csv")
        slurp("../data/../params.yaml")

    assert record(proj, body).reads == ["data/train.csv", "params.yaml"]


def test_a_missing_file_that_was_tried_is_recorded(proj: Path) -> None:
    def body() -> None:
        try:
            slurp(proj / "local.cfg")
        except FileNotFoundError:
            pass

    assert record(proj, body).reads == ["local.cfg"]


def test_exclusions(proj: Path, tmp_path: Path) -> None:
    store = proj / ".zenbuild"
    store.mkdir()
    (store / "blob").write_text("x")
    venv = proj / ".venv" / "lib"
    venv.mkdir(parents=True)
    (venv / "mod.txt").write_text("x")
    (proj / "__pycache__").mkdir()
    (proj / "__pycache__" / "m.txt").write_text("x")
    (proj / "old.pyc").write_bytes(b"x")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")

    def body() -> None:
        for p in (store / "blob", venv / "mod.txt", proj / "__pycache__" / "m.txt",
                  proj / "old.pyc", outside):
            p.read_bytes()
        (proj / "made.txt").write_text("mine")  # written by the step, then read back
        (proj / "made.txt").read_text()

    t = record(proj, body)
    assert t.reads == [] and t.writes == ["made.txt"]


def test_zenbuilds_own_reads_and_the_import_system_are_ignored(proj: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from zenbuild.digest import digest_file

    (proj / "zb_helper_mod.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(proj))

    def body() -> None:
        digest_file(str(proj / "data" / "train.csv"))  # zenbuild's code, called in the step
        importlib.import_module("zb_helper_mod")  # the .py the import system reads

    t = record(proj, body)
    assert t.reads == [] and t.listed == []
    sys.modules.pop("zb_helper_mod", None)


def test_undeclared_writes_not_outputs_nor_temporaries(proj: Path) -> None:
    def body() -> None:
        (proj / "build").mkdir()
        (proj / "build" / "out.txt").write_text("declared file")
        (proj / "models").mkdir()
        (proj / "models" / "m.bin").write_bytes(b"in a declared folder")
        tmp = proj / "report.tmp"
        tmp.write_text("then renamed")
        os.replace(tmp, proj / "report.txt")
        (proj / "scratch.txt").write_text("then deleted")
        os.remove(proj / "scratch.txt")
        with open(proj / "log.txt", "a") as f:
            f.write("appended")
        fd = os.open(str(proj / "raw.bin"), os.O_WRONLY | os.O_CREAT)
        os.close(fd)

    t = record(proj, body, outputs=("build/out.txt", "models/"))
    assert t.writes == ["log.txt", "raw.bin", "report.txt"]
    assert t.reads == []


def test_reads_of_declared_outputs_are_not_inputs(proj: Path) -> None:
    (proj / "build").mkdir()
    (proj / "build" / "ckpt.bin").write_bytes(b"old")
    t = record(proj, lambda: (proj / "build" / "ckpt.bin").read_bytes(), outputs=("build",))
    assert t.reads == []


def test_folder_listings(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import glob

    monkeypatch.chdir(proj)

    def body() -> None:
        os.listdir(proj / "data")
        list(os.scandir("."))
        glob.glob(str(proj / "data" / "*.csv"))
        os.listdir(proj.parent)  # outside the root

    assert record(proj, body).listed == [".", "data"]


def test_track_reads_off_records_no_files(proj: Path) -> None:
    t = record(proj, lambda: slurp(proj / "params.yaml"), track_reads=False)
    assert t.reads == [] and not t.reads_traced


# -- environment ---------------------------------------------------------------------------------


def test_env_reads_with_values_and_missing(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("DATA_DIR", "/data")
    monkeypatch.setenv("SEED", "7")
    monkeypatch.delenv("NOT_SET_ZB", raising=False)

    def body() -> None:
        os.environ.get("DEVICE")
        os.getenv("NOT_SET_ZB")
        assert "DATA_DIR" in os.environ
        int(os.environ["SEED"])

    t = record(proj, body)
    assert t.env == {"DEVICE": "cpu", "NOT_SET_ZB": None, "DATA_DIR": "/data", "SEED": "7"}
    assert t.env_traced


def test_env_deny_list_and_ignore_env(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_CACHE_DIR", "x")
    monkeypatch.setenv("MYAPP_MODE", "fast")
    monkeypatch.setenv("LC_ALL", "C")

    def body() -> None:
        for name in ("PATH", "HOME", "LC_ALL", "PYTHONHASHSEED", "ZENBUILD_X", "MY_CACHE_DIR",
                     "MYAPP_MODE"):
            os.environ.get(name)
        os.environ["SET_BY_STEP_ZB"] = "1"  # set by the step itself: not an input
        os.environ.get("SET_BY_STEP_ZB")
        del os.environ["SET_BY_STEP_ZB"]

    t = record(proj, body, ignore_env=("MY_CACHE_*",))
    assert t.env == {"MYAPP_MODE": "fast"} and t.env_all is None


@pytest.mark.parametrize("how", ["copy", "dict", "items", "iterate", "unpack", "environb"])
def test_reading_the_environment_whole_reads_every_tracked_variable(
        proj: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A copy or iteration of os.environ (a settings class, a subprocess's env) depends on every
    tracked variable, and on the set of names (Trace.env_all): the deny-list, ignore_env, the
    per-session variables (GIT_*, MAKEFLAGS) and what the step set itself stay out."""
    import subprocess

    monkeypatch.setenv("MY_CACHE_DIR", "x")
    monkeypatch.setenv("MYAPP_MODE", "fast")
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("GIT_INDEX_FILE", "/tmp/idx")
    monkeypatch.setenv("MAKEFLAGS", "-j2")
    for noise in ("KITTY_PID", "WEZTERM_PANE", "ZELLIJ_SESSION_NAME", "SUDO_USER",
                  "GITHUB_RUN_ID", "XAUTHORITY", "_P9K_TTY", "STARSHIP_SESSION_KEY",
                  "STARSHIP_SHELL"):
        monkeypatch.setenv(noise, "1")
    monkeypatch.delenv("SET_BY_STEP_ZB", raising=False)

    def body() -> None:
        os.environ["SET_BY_STEP_ZB"] = "1"
        if how == "copy":
            env = os.environ.copy()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        elif how == "dict":
            dict(os.environ).get("ANYTHING")
        elif how == "items":
            {k.lower(): v for k, v in os.environ.items()}  # what pydantic-settings does
        elif how == "iterate":
            [k for k in os.environ if k.startswith("NOTHING_")]
        elif how == "unpack":
            assert {**os.environ, "EXTRA": "1"}
        else:
            list(os.environb)
        del os.environ["SET_BY_STEP_ZB"]

    t = record(proj, body, ignore_env=("MY_CACHE_*",))
    assert t.env_all is not None and "MYAPP_MODE" in t.env_all
    assert t.env["MYAPP_MODE"] == "fast"
    for left_out in ("MY_CACHE_DIR", "LC_ALL", "PATH", "HOME", "GIT_INDEX_FILE", "MAKEFLAGS",
                     "PYTEST_CURRENT_TEST", "KITTY_PID", "WEZTERM_PANE", "ZELLIJ_SESSION_NAME",
                     "SUDO_USER", "GITHUB_RUN_ID", "XAUTHORITY", "_P9K_TTY",
                     "STARSHIP_SESSION_KEY", "STARSHIP_SHELL"):
        assert left_out not in t.env_all and left_out not in t.env, left_out
    # set by the step itself: no input, but listed, so that a later check (in a watch process,
    # which keeps it) does not take it for a variable set since
    assert "SET_BY_STEP_ZB" in t.env_all and "SET_BY_STEP_ZB" not in t.env
    assert set(t.env_all) - {"SET_BY_STEP_ZB"} <= set(t.env)  # each value is a read
    assert t.env_all == sorted(t.env_all)


@pytest.mark.parametrize("how", ["inherit", "system", "own_env"])
def test_a_subprocess_inheriting_the_environment_reads_it_whole(
        proj: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    import subprocess

    monkeypatch.setenv("MYAPP_MODE", "fast")

    def body() -> None:
        if how == "inherit":
            subprocess.run(["true"], check=True)
        elif how == "system":
            os.system("true")
        else:  # an env of its own: only what the step looked up to build it
            subprocess.run(["true"], env={"MODE": os.environ.get("MYAPP_MODE", "")}, check=True)

    t = record(proj, body)
    if how == "own_env":
        assert t.env_all is None and t.env == {"MYAPP_MODE": "fast"}
    else:
        assert t.env_all is not None and "MYAPP_MODE" in t.env_all
        assert t.env["MYAPP_MODE"] == "fast"


def test_project_files_a_subprocess_command_line_names_are_reads(
        proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.chdir(proj)

    for rel in ("prep.sh", "data/x.csv", "data/y.csv", "data/z.csv", "pkg/__init__.py",
                "pkg/job.py", "sub/w.txt", "declared.csv"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("1\n")
    (proj / "data" / "folder").mkdir()

    def body() -> None:
        subprocess.run(["cat", "prep.sh", "--ignored=data/x.csv", "missing.txt", "data/folder",
                        "declared.csv"], capture_output=True)
        subprocess.run("cat data/y.csv 'unbalanced", shell=True, capture_output=True)
        os.system("cat data/z.csv > /dev/null")
        subprocess.run([sys.executable, "-c", "pass", "-m", "pkg.job"], check=True)
        subprocess.run(["cat", "w.txt"], cwd=str(proj / "sub"), check=True,
                       capture_output=True)
        subprocess.run("cat glob/g*.csv", shell=True, check=True, capture_output=True)
        subprocess.run(["dd", "if=kv/in.bin", "status=none"], check=True, capture_output=True)
        subprocess.run(["sh", "-c", 'cat "$IN"'], env={"IN": "env/in.txt", "PATH": "/usr/bin:/bin"},
                       check=True, capture_output=True)

    for rel in ("glob/g1.csv", "glob/g2.csv", "glob/other.txt", "glob/.g3.csv", "kv/in.bin",
                "env/in.txt"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("1\n")
    t = record(proj, body, inputs=frozenset({"declared.csv"}))
    assert sorted(t.reads) == ["data/x.csv", "data/y.csv", "data/z.csv", "env/in.txt",
                               "glob/g1.csv", "glob/g2.csv", "kv/in.bin", "pkg/job.py",
                               "prep.sh", "sub/w.txt"]
    assert t.listed == ["glob"]  # a new match reruns the step
    assert t.writes == []


def test_a_file_a_subprocess_was_given_and_changed_is_its_write(
        proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sort -o out in``: the child rewrote ``out``; counted as a read, its change while the
    step ran would keep the step uncached on every run."""
    import subprocess

    monkeypatch.chdir(proj)
    (proj / "data" / "raw.txt").write_text("b\na\n")
    (proj / "data" / "sorted.txt").write_text("old\n")

    def body() -> None:
        subprocess.run(["sort", "-o", "data/sorted.txt", "data/raw.txt"], check=True)
        subprocess.run(["sh", "-c", "cat data/train.csv >> data/log.txt"], check=True)

    (proj / "data" / "log.txt").write_text("")
    t = record(proj, body)
    assert sorted(t.reads) == ["data/raw.txt", "data/train.csv"]
    assert sorted(t.writes) == ["data/log.txt", "data/sorted.txt"]


def _read_in_child(path: str) -> str:
    with open(path) as f:
        return f.read() + os.environ.get("CHILD_VAR_ZB", "")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
@pytest.mark.parametrize("how", ["pool", "executor", "os_fork"])
def test_reads_in_forked_workers_reach_the_step_trace(
        proj: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A forked worker inherits the recording; what it reads (files, environment variables)
    is sent back through a spool file and merged when the step's recording finishes."""
    import glob
    import multiprocessing as mp
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    monkeypatch.chdir(proj)
    monkeypatch.setenv("CHILD_VAR_ZB", "x")
    for i in range(3):
        (proj / "data" / f"{i}.txt").write_text(str(i))
    paths = [f"data/{i}.txt" for i in range(3)]
    ctx = mp.get_context("fork")
    spools_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "zenbuild-spool-*.jsonl")))

    def body() -> None:
        if how == "pool":
            with ctx.Pool(2) as pool:
                assert pool.map(_read_in_child, paths) == ["0x", "1x", "2x"]
        elif how == "executor":
            with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                assert list(ex.map(_read_in_child, paths)) == ["0x", "1x", "2x"]
        else:
            pid = os.fork()
            if pid == 0:  # the child: read, then leave at once
                try:
                    for p in paths:
                        _read_in_child(p)
                finally:
                    os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0

    t = record(proj, body)
    assert sorted(t.reads) == paths
    assert t.env == {"CHILD_VAR_ZB": "x"}
    # the spool is gone once merged (this process's lock stays until it exits)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "zenbuild-spool-*.jsonl"))
               ) <= spools_before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_pool_kept_between_steps_sends_its_reads_to_the_step_that_uses_it(
        proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers forked in one step and used by the next (a pool kept at module level): what
    they read for the second step goes to the second step's trace."""
    import multiprocessing as mp

    monkeypatch.chdir(proj)
    (proj / "data" / "a.txt").write_text("a")
    (proj / "data" / "b.txt").write_text("b")
    pool = None
    try:
        def first() -> None:
            nonlocal pool
            pool = mp.get_context("fork").Pool(1)
            assert pool.apply(_read_in_child, ("data/a.txt",)) == "a"

        def second() -> None:
            assert pool is not None and pool.apply(_read_in_child, ("data/b.txt",)) == "b"

        t1 = record(proj, first)
        t2 = record(proj, second)
        assert t1.reads == ["data/a.txt"] and t2.reads == ["data/b.txt"]
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def test_a_whole_environment_read_verifies_every_variable_and_new_names() -> None:
    from zenbuild import discovered as D
    from zenbuild import reasons as R
    from zenbuild.trace import Trace

    env = {"MYAPP_MODE": "fast", "OTHER": "1"}
    t = Trace(env=dict(env), env_traced=True, env_all=sorted(env))
    rec = D.build(t, lambda rel: None, lambda f, q, line: None)
    assert rec["env_all"] == ["MYAPP_MODE", "OTHER"] and D.malformed(rec) is None
    assert not D.is_empty(rec)
    check = lambda environ: D.verify(rec, lambda rel: None, environ,  # noqa: E731
                                     lambda f, q, line: None)
    assert check({**env, "PATH": "/x", "GIT_DIR": "/g", "MAKEFLAGS": "-k"}) == []
    changed = check({"MYAPP_MODE": "slow", "OTHER": "1"})
    assert [(r.kind, r.subject) for r in changed] == [(R.ENV_READ_CHANGED, "MYAPP_MODE")]
    gone = check({"MYAPP_MODE": "fast"})
    assert [(r.kind, r.subject, r.after) for r in gone] == [(R.ENV_READ_CHANGED, "OTHER", None)]
    added = check({**env, "LR": "0.5"})
    assert [(r.kind, r.subject, r.after) for r in added] == [(R.ENV_READ_CHANGED, "LR", "0.5")]
    assert "it read os.environ whole" in R.text(added[0]) and "'0.5'" in R.text(added[0])
    hidden = check({**env, "API_TOKEN": "hunter2"})
    assert hidden and "hunter2" not in R.text(hidden[0])
    # a name the step set itself (no value kept) is neither compared nor new
    own = {**rec, "env_all": [*rec["env_all"], "OWN_ZB"]}
    assert D.malformed(own) is None
    assert D.verify(own, lambda rel: None, {**env, "OWN_ZB": "2"}, lambda f, q, line: None) == []
    # a damaged section is never trusted
    assert D.malformed({**rec, "env_all": [3]}) is not None
    assert D.malformed({**rec, "env_all": "MYAPP_MODE"}) is not None
    assert Trace.from_json(t.to_json()).env_all == ["MYAPP_MODE", "OTHER"]
    assert Trace.from_json(Trace().to_json()).env_all is None


def test_environ_is_restored_when_the_step_raises(proj: Path) -> None:
    cls = type(os.environ)
    before = (cls.__getitem__, cls.__setitem__, cls.__delitem__, cls.__iter__)
    with pytest.raises(RuntimeError):
        with Recorder(opts(proj)) as r:
            assert type(os.environ).__getitem__ is not before[0]  # wrapped while recording
            assert isinstance(os.environ, cls) and type(os.environ).__name__ == cls.__name__
            os.environ.get("ANY_ZB")
            raise RuntimeError("boom")
    assert r.trace is not None and r.trace.env == {"ANY_ZB": None}
    assert type(os.environ) is cls
    assert (cls.__getitem__, cls.__setitem__, cls.__delitem__, cls.__iter__) == before
    assert os.environ.copy() == dict(os.environ)


def test_an_environ_of_another_class_is_wrapped_through_its_class(proj: Path,
                                                                  monkeypatch: Any) -> None:
    """os.environ replaced by an instance of a subclass of os._Environ: its reads are still
    recorded (os._Environ's methods are set while recording) and put back after."""
    cls = type(os.environ)
    sub = type("MyEnviron", (cls,), {})
    mine = sub(os.environ._data, os.environ.encodekey, os.environ.decodekey,  # type: ignore
               os.environ.encodevalue, os.environ.decodevalue)  # type: ignore
    monkeypatch.setattr(os, "environ", mine)
    before = (cls.__getitem__, cls.__iter__)
    with Recorder(opts(proj)) as r:
        assert type(os.environ) is sub and cls.__getitem__ is not before[0]
        os.environ.get("ANY_ZB_SUB")
    assert r.trace is not None and r.trace.env == {"ANY_ZB_SUB": None}
    assert (cls.__getitem__, cls.__iter__) == before and type(os.environ) is sub


def test_secret_looking_names() -> None:
    assert all(is_secret(n) for n in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD",
                                      "api_key", "GOOGLE_APPLICATION_CREDENTIALS"))
    assert not any(is_secret(n) for n in ("DEVICE", "DATA_DIR", "SEED", "BATCH_SIZE"))


# -- calls ---------------------------------------------------------------------------------------


def _project_module(proj: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    (proj / "pkg").mkdir(exist_ok=True)
    (proj / "pkg" / f"{name}.py").write_text(
        "import json\n\n"
        "def helper(x):\n    return json.dumps(x)\n\n\n"
        "class Scaler:\n    def transform(self, x):\n        return [v * 2 for v in x]\n\n\n"
        "def unused():\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(proj))
    return importlib.import_module(f"pkg.{name}")


def test_project_functions_that_ran(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _project_module(proj, monkeypatch, "calls_a")
    src = "def cell_helper(x):\n    return x + 1\n"
    cell = "<zb-cell-1>"
    linecache.cache[cell] = (len(src), None, src.splitlines(True), cell)
    ns: dict = {}
    exec(compile(src, cell, "exec"), ns)
    try:
        def body() -> None:
            mod.helper({"a": 1})
            mod.Scaler().transform([1])
            ns["cell_helper"](1)

        t = record(proj, body, trace_calls=True)
    finally:
        del linecache.cache[cell]
        sys.modules.pop("pkg.calls_a", None)
    assert t.calls_traced
    listcomp = ([] if sys.version_info >= (3, 12)  # PEP 709: comprehensions are inlined
                else [["pkg/calls_a.py", "Scaler.transform.<locals>.<listcomp>", 9]])
    assert t.calls == [["<__main__>", "cell_helper", 1],
                       ["pkg/calls_a.py", "Scaler.transform", 8],
                       *listcomp,
                       ["pkg/calls_a.py", "helper", 3]]


def test_every_recording_sees_the_functions_it_ran(proj: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each recording sees the project functions it ran, also one an earlier recording called
    in a hot loop (disabled then, on 3.12, until the next recording restarts events) and one
    called just as often between recordings; a function run only outside a recording is not
    in the next one."""
    from zenbuild.trace import calls

    mod = _project_module(proj, monkeypatch, "calls_c")
    helper = ["pkg/calls_c.py", "helper", 3]
    try:
        def hot() -> None:
            for i in range(calls.HOT_CALLS + 5):
                mod.helper(i)

        assert record(proj, hot, trace_calls=True).calls == [helper]
        assert record(proj, lambda: mod.helper(1), trace_calls=True).calls == [helper]
        for i in range(calls.HOT_CALLS + 5):  # outside any recording
            mod.helper(i)
            mod.Scaler().transform([i])
        assert record(proj, lambda: mod.helper(2), trace_calls=True).calls == [helper]
        assert record(proj, lambda: None, trace_calls=True).calls == []
    finally:
        sys.modules.pop("pkg.calls_c", None)


def test_calls_off_by_option_and_when_a_profiler_is_set(proj: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _project_module(proj, monkeypatch, "calls_b")
    try:
        assert record(proj, lambda: mod.helper(1)).calls == []
        other = sys.getprofile()
        sys.setprofile(lambda *a: None)
        try:
            t = record(proj, lambda: mod.helper(1), trace_calls=True)
        finally:
            sys.setprofile(other)
        if sys.version_info >= (3, 12):  # sys.monitoring does not compete with the profiler
            assert t.calls == [["pkg/calls_b.py", "helper", 3]] and t.calls_traced
        else:  # cProfile would displace the user's profiler: tracing is skipped, and said so
            assert t.calls == [] and not t.calls_traced
    finally:
        sys.modules.pop("pkg.calls_b", None)


class FakeMonitoring:
    """Stands in for sys.monitoring (Python >= 3.12) to check the callback logic."""

    DISABLE = object()

    class events:
        PY_START = 1

    def __init__(self) -> None:
        self.tools: dict = {}
        self.callback: Any = None
        self.enabled = 0
        self.restarts = 0

    def get_tool(self, tool: int) -> Any:
        return self.tools.get(tool)

    def use_tool_id(self, tool: int, name: str) -> None:
        self.tools[tool] = name

    def register_callback(self, tool: int, event: int, fn: Any) -> None:
        self.callback = fn

    def set_events(self, tool: int, events: int) -> None:
        self.enabled = events

    def restart_events(self) -> None:
        self.restarts += 1

    def free_tool_id(self, tool: int) -> None:
        self.tools.pop(tool, None)


def test_monitoring_backend_logic(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zenbuild.trace import calls

    fake = FakeMonitoring()
    monkeypatch.setattr(calls, "HOT_CALLS", 3)
    rec = trace._Recording(opts(proj), None)
    code = test_monitoring_backend_logic.__code__  # no library's: recorded at every call
    library = os.path.join.__code__  # the standard library's: disabled for good
    tracer = CallTracer(rec, lambda: rec, lambda: 1, monitoring=fake)
    tracer.start()
    assert fake.enabled == fake.events.PY_START and fake.restarts == 0
    assert fake.callback(library, 0) is fake.DISABLE and library not in rec.codes
    assert fake.callback(code, 0) is None and code in rec.codes
    assert tracer.stop() and fake.enabled == fake.events.PY_START  # left on: no re-instrumenting
    again = CallTracer(rec, lambda: rec, lambda: 1, monitoring=fake)
    again.start()
    assert fake.restarts == 0  # nothing of a project was disabled: no restart
    assert fake.callback(code, 0) is None
    assert fake.callback(code, 0) is fake.DISABLE  # HOT_CALLS calls: disabled until a restart
    again.stop()
    crowd = CallTracer(rec, lambda: rec, lambda: 2, monitoring=fake)
    crowd.start()
    assert fake.restarts == 1  # so that this recording sees that code again
    for _ in range(5):  # several recordings: never disabled for the others
        assert fake.callback(code, 0) is None
    crowd.stop()


def test_monitoring_is_turned_off_at_exit(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left on, the callback fired while the interpreter shut down, after the module's globals
    were gone: 'Exception ignored ... NoneType has no attribute get' at a Python API user's
    exit. Taking the tool registers its release with atexit (which runs before teardown)."""
    import atexit

    from zenbuild.trace import calls

    at_exit: list = []
    monkeypatch.setattr(atexit, "register", lambda fn, *a: at_exit.append((fn, a)))
    fake = FakeMonitoring()
    rec = trace._Recording(opts(proj), None)
    tracer = CallTracer(rec, lambda: rec, lambda: 1, monitoring=fake)
    tracer.start()
    tracer.stop()
    assert fake.enabled and fake.tools and len(at_exit) == 1
    fn, args = at_exit[0]
    fn(*args)  # what the interpreter does at exit
    assert fake.enabled == 0 and fake.callback is None and fake.tools == {}
    assert id(fake) not in calls._TOOLS


# -- attribution, nesting, the hook outside recordings ------------------------------------------


def test_threads_started_by_the_step_and_concurrent_recordings(proj: Path) -> None:
    def in_thread() -> None:
        slurp(proj / "params.yaml")

    def body() -> None:
        th = threading.Thread(target=in_thread)
        th.start()
        th.join()

    assert record(proj, body).reads == ["params.yaml"]

    ready = threading.Barrier(2)
    results: dict = {}

    def step(name: str, rel: str) -> None:
        with Recorder(opts(proj)) as r:
            ready.wait()  # both recordings are active at once
            slurp(proj / rel)
            ready.wait()
        results[name] = r.trace.reads  # type: ignore[union-attr]

    threads = [threading.Thread(target=step, args=("a", "params.yaml")),
               threading.Thread(target=step, args=("b", "data/train.csv"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {"a": ["params.yaml"], "b": ["data/train.csv"]}


def test_threads_running_before_the_recording_count_only_with_user_code(proj: Path) -> None:
    """A thread that was already running (a Dask worker's profiler reading source through
    linecache, a pool made earlier) is not the step: its library-only reads are not the step's,
    but the step's own function run on such a pool is."""
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(1) as pool:
        pool.submit(int).result()  # the pool's thread exists before the recording
        (proj / "src.py").write_text("x = 1\n")

        def body() -> None:
            pool.submit(Path(proj / "data" / "train.csv").read_text).result()  # library only
            pool.submit(linecache.updatecache, str(proj / "src.py")).result()
            pool.submit(slurp, proj / "params.yaml").result()  # the step's own code

        assert record(proj, body).reads == ["params.yaml"]

        def fresh() -> None:  # a thread the step starts is the step's, library code or not
            th = threading.Thread(target=Path(proj / "data" / "train.csv").read_text)
            th.start()
            th.join()

        assert record(proj, fresh).reads == ["data/train.csv"]


def test_nested_recordings_report_to_the_outer_one(proj: Path) -> None:
    with Recorder(opts(proj)) as outer:
        slurp(proj / "params.yaml")
        with Recorder(opts(proj)) as inner:
            slurp(proj / "data" / "train.csv")
    assert inner.trace is not None and outer.trace is not None
    assert inner.trace.reads == ["data/train.csv"]
    assert outer.trace.reads == ["data/train.csv", "params.yaml"]


def test_the_hook_is_inert_when_nothing_records(proj: Path) -> None:
    with Recorder(opts(proj)) as r:  # installs the hook
        pass
    rec = r._rec
    assert rec is not None and not trace._ACTIVE
    slurp(proj / "params.yaml")  # no recording: nothing is kept anywhere
    os.environ.get("DEVICE")
    assert rec.reads == {} and rec.env == {}
    assert r.trace is not None and r.trace.reads == []
    assert record(proj, lambda: None).reads == []  # a later recording starts empty


def test_import_time_mode(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (proj / "zb_cfg_mod.py").write_text(
        "import os\n"
        "HERE = os.path.dirname(os.path.abspath(__file__))\n"
        "with open(os.path.join(HERE, 'params.yaml')) as f:\n"
        "    PARAMS = f.read()\n"
        "MODE = os.environ.get('ZB_IMPORT_MODE')\n"
    )
    monkeypatch.syspath_prepend(str(proj))
    monkeypatch.setenv("ZB_IMPORT_MODE", "on")
    try:
        with recording_imports(str(proj), str(proj / ".zenbuild")) as r:
            importlib.import_module("zb_cfg_mod")
    finally:
        sys.modules.pop("zb_cfg_mod", None)
    assert r.trace is not None
    assert r.trace.reads == ["params.yaml"] and r.trace.env == {"ZB_IMPORT_MODE": "on"}
    assert r.trace.calls == []


# -- the record and call_task --------------------------------------------------------------------


def test_trace_is_json_and_pickle_round_trip(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE", "cuda")
    t = record(proj, lambda: (slurp(proj / "params.yaml"), os.getenv("DEVICE")))
    again = Trace.from_json(json.loads(json.dumps(t.to_json())))
    assert again == t == pickle.loads(pickle.dumps(t))
    assert again.reads == ["params.yaml"] and again.env == {"DEVICE": "cuda"}


def test_call_task_carries_the_trace_also_for_a_failed_step(proj: Path) -> None:
    def good(path: Path) -> str:
        return path.read_text()

    def bad(path: Path) -> None:
        path.read_text()
        raise ValueError("bad step")

    o = call_task(Task("good", good, (proj / "params.yaml",), {}, opts(proj)))
    assert o.ok and o.value == "lr: 0.1\n" and o.trace is not None
    assert o.trace.reads == ["params.yaml"]
    o = call_task(Task("bad", bad, (proj / "params.yaml",), {}, opts(proj)))
    assert not o.ok and o.trace is not None and o.trace.reads == ["params.yaml"]
    assert 'raise ValueError("bad step")' in o.error and "ValueError: bad step" in o.error
    assert call_task(Task("plain", good, (proj / "params.yaml",), {})).trace is None


def test_declared_files_are_dismissed_but_paths_through_them_are_not(proj: Path) -> None:
    """Opening a declared input or output (by the absolute path a step receives, str or
    Path) is not recorded; a path that only looks like one until it is normalized (.. out of
    an output folder, ./, //) or a relative one is judged as rel() sees it."""
    (proj / "build").mkdir()
    (proj / "inp.txt").write_text("declared")
    (proj / "secret.txt").write_text("undeclared")
    (proj / "other.txt").write_text("undeclared too")

    def body() -> None:
        slurp(proj / "inp.txt")
        slurp(str(proj / "inp.txt"))
        (proj / "build" / "out.txt").write_text("made")
        slurp(str(proj / "build") + "/../secret.txt")
        slurp(str(proj) + "/./other.txt")
        slurp(str(proj) + "//inp.txt")

    t = record(proj, body, outputs=("build",), inputs=frozenset({"inp.txt"}))
    assert t.reads == ["other.txt", "secret.txt"]
    assert t.writes == []


def test_modules_that_appear_or_are_replaced_between_scans_are_seen(proj: Path) -> None:
    """trace/modules remembers its scan of sys.modules while it holds the same objects: a
    module added, or another object put under a known name, must still be noticed."""
    import types

    (proj / "zb_scan_a.py").write_text("X = 1\n")
    (proj / "zb_scan_b.py").write_text("X = 2\n")
    record(proj, lambda: None)  # a scan with neither module there

    def add() -> None:
        m = types.ModuleType("zb_scan")
        m.__file__ = str(proj / "zb_scan_a.py")
        sys.modules["zb_scan"] = m

    def replace() -> None:
        m = types.ModuleType("zb_scan")
        m.__file__ = str(proj / "zb_scan_b.py")
        sys.modules["zb_scan"] = m  # same name, same number of modules, another object

    try:
        assert "zb_scan_a.py" in record(proj, add).modules
        assert record(proj, lambda: None).modules == []  # nothing new: the remembered scan
        got = record(proj, replace).modules
        assert "zb_scan_b.py" in got and "zb_scan_a.py" not in got
    finally:
        sys.modules.pop("zb_scan", None)


def test_merge_into_adds_what_decoding_the_arguments_touched():
    from zenbuild.trace import Trace, merge_into

    step = Trace(reads=["b.txt", "a.txt"], env={"X": "2"}, calls=[["m.py", "f", 1]],
                 reads_traced=True, env_traced=True, calls_traced=True, started_ns=20)
    before = Trace(reads=["vocab.txt", "a.txt"], env={"X": "1", "Y": None},
                   calls=[["m.py", "Tok.load", 5], ["m.py", "f", 1]], modules=["m.py"],
                   reads_traced=True, env_traced=False, calls_traced=True, started_ns=10)
    merge_into(step, before)
    assert step.reads == ["vocab.txt", "a.txt", "b.txt"]
    assert step.env == {"X": "1", "Y": None}  # the value first seen
    assert step.calls == [["m.py", "Tok.load", 5], ["m.py", "f", 1]]
    assert step.modules == ["m.py"] and step.started_ns == 10
    assert step.reads_traced and not step.env_traced and step.calls_traced
