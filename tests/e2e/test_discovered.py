"""End-to-end: discovered dependencies through the real CLI. What a step touched while it ran
(files opened without File(), environment variables, project functions reached dynamically) is
kept on its entry and verified before the entry is served: a change reruns exactly that step
and its dependents, explain names it, and nothing else reruns."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import Project, sqlite_db

# Steps open relative paths ("data/train.csv"), as in a notebook or script run from the project
# root, so every command runs with the project root as its working directory (project.cli).

PIPE = '''
import importlib
import os

import numpy as np
from zenbuild import Output, pipeline, step
from ticker import tick


@step
def load() -> float:
    tick("load")
    return float(np.loadtxt("data/train.csv", delimiter=",").sum())


@step
def device() -> str:
    tick("device")
    return os.environ.get("DEVICE", "cpu") + "/" + os.environ.get("API_TOKEN", "")[:0]


@step
def home() -> int:
    tick("home")
    return len(os.environ.get("HOME", "")) * 0 + len(os.environ.get("MY_NOISE", "")) * 0


@step
def plugin(name: str) -> str:
    tick("plugin")
    mod = importlib.import_module(f"plugins.{name}")
    return mod.run()


@step
def side() -> int:
    tick("side")
    with open("side.txt", "w") as f:
        f.write("x")
    with open("side2.txt", "w") as f:
        f.write("y")
    return 1


@step
def report(total: float, dev: str, h: int, pl: str, s: int, out: Output) -> None:
    tick("report")
    out.write_text(f"{total} {dev} {h} {pl} {s}")


@pipeline
def p(which: str = "alpha"):
    report(load(), device(), home(), plugin(which), side(), Output("build/report.txt"))
'''

PLUGIN = '''
def run():
    return "alpha-1"
'''


def make(project: Project, fingerprint: str = "") -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n' + fingerprint)
    project.write("pipe.py", PIPE)
    project.write("data/train.csv", "1,2\n3,4\n")
    project.write("plugins/__init__.py", "")
    project.write("plugins/alpha.py", PLUGIN)
    return project


def first_run(project: Project, *args: str) -> None:
    r = project.cli("run", *args, env={"DEVICE": "cpu"})
    assert sorted(project.ticks()) == ["device", "home", "load", "plugin", "report", "side"], r
    r = project.cli("run", *args, env={"DEVICE": "cpu"})
    assert project.ticks() == [] and r.executed == [], r


def test_an_undeclared_read_reruns_its_step_when_edited_and_explain_names_it(
        project: Project) -> None:
    make(project)
    first_run(project)
    os.utime(project.root / "data" / "train.csv", ns=(10**18, 10**18))  # touch: nothing
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == [] and r.executed == [], r
    project.write("data/train.csv", "1,2\n3,5\n")
    r = project.cli("explain", "load", env={"DEVICE": "cpu"})
    assert "read by the step, not declared: data/train.csv changed" in r.stdout, r
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == ["load", "report"], r
    assert "11.0" in project.read("build/report.txt")
    (project.root / "data" / "train.csv").unlink()
    r = project.cli("explain", "load", env={"DEVICE": "cpu"})
    assert "read by the step, not declared: data/train.csv is gone" in r.stdout, r
    r = project.cli("run", env={"DEVICE": "cpu"}, check=1)
    assert project.ticks() == ["load"], r


def test_an_environment_read_reruns_only_its_step(project: Project) -> None:
    make(project)
    first_run(project)
    r = project.cli("explain", "device", env={"DEVICE": "cuda"})
    assert "read by the step: DEVICE 'cpu' -> 'cuda'" in r.stdout, r
    r = project.cli("run", env={"DEVICE": "cuda"})
    assert project.ticks() == ["device", "report"], r
    assert "cuda/" in project.read("build/report.txt")
    # a secret-looking name: rerun, its value never shown
    r = project.cli("explain", "device", env={"DEVICE": "cuda", "API_TOKEN": "hunter2-s3cret"})
    assert "read by the step: API_TOKEN changed (value hidden)" in r.stdout, r
    assert "hunter2" not in r.output
    r = project.cli("run", env={"DEVICE": "cuda", "API_TOKEN": "hunter2-s3cret"})
    assert project.ticks() == ["device"], r  # same value: report stays cached
    # a deny-listed variable (HOME) and an ignored one (ignore_env) never rerun anything
    r = project.cli("run", env={"DEVICE": "cuda", "API_TOKEN": "hunter2-s3cret",
                                "HOME": "/elsewhere"})
    assert project.ticks() == [] and r.executed == [], r


def test_ignore_env_and_track_reads_false(project: Project) -> None:
    make(project, '[fingerprint]\nignore_env = ["MY_*"]\ntrack_reads = false\n')
    first_run(project)
    r = project.cli("run", env={"DEVICE": "cpu", "MY_NOISE": "1"})
    assert project.ticks() == [] and r.executed == [], r
    project.write("data/train.csv", "1,2\n3,5\n")  # reads not tracked: served (stale)
    r = project.cli("run", env={"DEVICE": "cpu", "MY_NOISE": "2"})
    assert project.ticks() == [] and r.executed == [], r


def test_without_ignore_env_a_variable_is_tracked(project: Project) -> None:
    make(project)
    first_run(project)
    r = project.cli("run", env={"DEVICE": "cpu", "MY_NOISE": "3"})
    assert project.ticks() == ["home"], r


def test_a_bad_fingerprint_setting_is_a_usage_error(project: Project) -> None:
    make(project, "[fingerprint]\ntrace_calls = 1\n")
    r = project.cli("run", check=2)
    assert "fingerprint.trace_calls: expected true or false" in r.output, r
    make(project, '[fingerprint]\ntrack_files = true\n')
    r = project.cli("run", check=2)
    assert "fingerprint.track_files: unknown key" in r.output, r


def test_a_plugin_loaded_by_a_computed_name_reruns_when_edited(project: Project) -> None:
    make(project)
    first_run(project)
    # up to date: explain still says what the static analysis had missed, and what was read
    r = project.cli("explain", "plugin", env={"DEVICE": "cpu"})
    assert "code it ran that the static analysis had missed: plugins/alpha.py:run" in r.stdout, r
    r = project.cli("explain", "load", env={"DEVICE": "cpu"})
    assert "read while it ran, not declared: data/train.csv" in r.stdout, r
    r = project.cli("explain", "device", env={"DEVICE": "cpu"})
    assert "environment variables it read: API_TOKEN, DEVICE" in r.stdout, r  # names only
    # cosmetic edit of the plugin: the traced function's AST is the same
    project.write("plugins/alpha.py", "# a comment\n" + PLUGIN)
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == [] and r.executed == [], r
    project.write("plugins/alpha.py", PLUGIN.replace("alpha-1", "alpha-2"))
    r = project.cli("explain", "plugin", env={"DEVICE": "cpu"})
    assert "code run by the step, not seen statically: plugins/alpha.py:run changed" in r.stdout
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == ["plugin", "report"], r
    assert "alpha-2" in project.read("build/report.txt")


def test_parallel_workers_record_and_verify_the_same(project: Project) -> None:
    make(project)
    first_run(project, "-j", "2")
    project.write("plugins/alpha.py", PLUGIN.replace("alpha-1", "alpha-3"))
    project.write("data/train.csv", "1,2\n3,6\n")
    r = project.cli("run", "-j", "2", env={"DEVICE": "gpu"})
    assert sorted(project.ticks()) == ["device", "load", "plugin", "report"], r
    assert project.read("build/report.txt").startswith("12.0 gpu/")
    r = project.cli("run", env={"DEVICE": "gpu"})  # serially now: the same records hold
    assert project.ticks() == [] and r.executed == [], r


def test_an_undeclared_write_warns_once_per_step(project: Project) -> None:
    make(project)
    r = project.cli("run", env={"DEVICE": "cpu"})
    warned = [ln for ln in r.output.splitlines() if "step side wrote" in ln]
    assert len(warned) == 1, r  # it wrote side.txt and side2.txt: one warning
    assert "step report wrote build/report.txt" not in r.output  # a declared Output
    assert ('step side wrote side.txt (and 1 more file), which will not be restored from the '
            'cache; declare it with Output("side.txt")') in warned[0]


def test_a_no_cache_run_records_too(project: Project) -> None:
    """--no-cache still stores entries: they carry their record, so a later run verifies."""
    make(project)
    r = project.cli("run", "--no-cache", env={"DEVICE": "cpu"})
    assert len(project.ticks()) == 6, r
    project.write("data/train.csv", "1,2\n3,7\n")
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == ["load", "report"], r


def test_a_file_changed_while_the_step_ran_is_not_cached(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
import os
import subprocess
import sys
from pathlib import Path
from zenbuild import pipeline, step
from ticker import tick


@step
def read() -> str:
    tick("read")
    text = Path("data/in.txt").read_text()
    if os.environ.get("EDIT_DURING"):  # another process edits the file meanwhile
        subprocess.run([sys.executable, "-c", "open('data/in.txt', 'a').write('b')"], check=True)
    return text


@pipeline
def p():
    read()
''')
    project.write("data/in.txt", "a")
    r = project.cli("run", env={"EDIT_DURING": "1"})
    assert project.ticks() == ["read"], r
    assert "input data/in.txt changed while step read ran; its result was used but not cached" \
        in r.output, r
    r = project.cli("run")  # nothing was cached
    assert project.ticks() == ["read"], r
    r = project.cli("run")
    assert project.ticks() == [], r


def test_the_record_survives_the_store_reopening_and_old_rows_have_none(project: Project,
                                                                        ) -> None:
    make(project)
    first_run(project)
    with sqlite_db(Path(project.root) / ".zenbuild" / "zenbuild.db") as db:
        rows = dict(db.execute("SELECT step, discovered FROM actions").fetchall())
    assert rows["load"] and "data/train.csv" in rows["load"]
    assert rows["device"] and "DEVICE" in rows["device"]
    assert rows["plugin"] and "plugins/alpha.py" in rows["plugin"]
    assert rows["report"] is None  # it touched nothing beyond its static key


def test_a_reverted_read_or_variable_is_served_from_the_store(project: Project) -> None:
    """One static key, several entries told apart by what the step read: a revert is served."""
    make(project)
    first_run(project)
    original = project.read("data/train.csv")
    project.write("data/train.csv", "1,2\n3,9\n")
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == ["load", "report"], r
    project.write("data/train.csv", original)
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == [] and "load" in r.cached, r
    assert project.read("build/report.txt").startswith("10.0 ")
    r = project.cli("run", env={"DEVICE": "cpu"})  # the served alternate is the latest again
    assert project.ticks() == [] and r.executed == [], r
    r = project.cli("run", env={"DEVICE": "tpu"})
    assert project.ticks() == ["device", "report"], r
    r = project.cli("run", env={"DEVICE": "cpu"})
    assert project.ticks() == [], r


def test_a_failing_env_read_shows_no_zenbuild_frame(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["envfail:p"]\n')
    project.write("envfail.py", '''
import os
from zenbuild import step, pipeline


@step
def mode() -> str:
    return os.environ["ZB_TEST_MODE_UNSET"]


@pipeline
def p():
    mode()
''')
    for args in ((), ("-j", "2")):
        r = project.cli("run", *args, check=1)
        assert "KeyError: 'ZB_TEST_MODE_UNSET'" in r.output, r
        assert 'envfail.py", line 8, in mode' in r.output, r
        assert "/zenbuild/" not in r.output.replace(str(project.root), ""), r


def test_an_existence_check_reruns_its_step_when_the_file_appears(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["probe:p"]\n')
    project.write("probe.py", '''
import os
from pathlib import Path
from zenbuild import step, pipeline
from ticker import tick


@step
def flag() -> bool:
    tick("flag")
    return os.path.exists("flag.txt")


@step
def config() -> str:
    tick("config")
    p = Path("pl.txt")
    return p.read_text() if p.is_file() else "none"


@step
def other() -> int:
    tick("other")
    return 1


@pipeline
def p():
    flag()
    config()
    other()
''')
    project.cli("run")
    assert sorted(project.ticks()) == ["config", "flag", "other"]
    r = project.cli("run")
    assert project.ticks() == [], r
    project.write("flag.txt", "x")
    project.write("pl.txt", "hello")
    r = project.cli("explain", "flag")
    assert "would execute" in r.stdout and "flag.txt" in r.stdout, r  # the file is the reason
    r = project.cli("run")
    assert sorted(project.ticks()) == ["config", "flag"], r
    doc = json.loads(project.cli("run", "--json").stdout)
    assert {s["status"] for s in doc["steps"]} == {"cached"}, doc
    assert project.ticks() == []
    project.write("pl.txt", "hello again")
    r = project.cli("run")
    assert project.ticks() == ["config"], r


def test_a_damaged_or_unknown_record_is_never_trusted(project: Project) -> None:
    """A record the store holds in a shape this version cannot check fully (a damaged row, or
    a store shared with a newer zenbuild) makes its step execute, and the row is replaced; it
    is neither served unchecked (a stale result) nor a traceback."""
    make(project)
    first_run(project)
    db = project.root / ".zenbuild" / "zenbuild.db"
    bad = ['{"files": 5}', '{"files": {"data/train.csv": 5}}', '{"format": 3}',
           '{"files": {"data/train.csv": ["x"]}, "format": 1}',
           '{"env": {"A": 3}, "format": 1}', '{"calls": [[1]], "format": 1}', '[1, 2]']
    for n, text in enumerate(bad):
        project.write("data/train.csv", f"1,2\n3,{10 + n}\n")  # a change only the record sees
        with sqlite_db(db) as c:
            got = c.execute("UPDATE actions SET discovered=? WHERE step='load'", (text,)).rowcount
        assert got >= 1
        r = project.cli("explain", "load", env={"DEVICE": "cpu"})
        assert "the record of what the step read last time cannot be checked" in r.stdout, (text, r)
        r = project.cli("run", env={"DEVICE": "cpu"})
        assert project.ticks() == ["load", "report"], (text, r)
        assert f"{1 + 2 + 3 + 10 + n}.0" in project.read("build/report.txt"), text
        r = project.cli("run", env={"DEVICE": "cpu"})  # the row was replaced by a good one
        assert project.ticks() == [] and r.executed == [], (text, r)


SETTINGS = '''
import os
import subprocess
import sys

from pydantic_settings import BaseSettings
from zenbuild import Output, pipeline, step
from ticker import tick


class Settings(BaseSettings):
    lr: float = 0.1


@step
def train() -> float:
    tick("train")
    return Settings().lr  # pydantic-settings reads os.environ whole (items())


@step
def tool() -> str:
    tick("tool")
    # the child inherits the whole environment (no env=)
    return subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MODE', '-'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


@step
def show(lr: float, mode: str, out: Output) -> None:
    tick("show")
    out.write_text(f"{lr} {mode}")


@pipeline
def p():
    show(train(), tool(), Output("build/show.txt"))
'''


def test_a_step_reading_the_environment_whole_reruns_when_a_variable_is_set_or_changed(
        project: Project) -> None:
    """pydantic-settings' BaseSettings copies the environment, a subprocess inherits it: a variable
    set, changed or unset afterwards reruns the step (it was served stale before); the
    per-session variables a terminal, git hook or make set do not."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", SETTINGS)
    r = project.cli("run")
    assert sorted(project.ticks()) == ["show", "tool", "train"], r
    assert project.read("build/show.txt") == "0.1 -"
    r = project.cli("run", env={"LR": "0.5"})  # not set before: a new name
    assert sorted(project.ticks()) == ["show", "tool", "train"], r
    assert project.read("build/show.txt") == "0.5 -"
    r = project.cli("explain", "train", env={"LR": "0.7", "NEW_ZB": "1"})
    assert "read by the step: LR '0.5' -> '0.7'" in r.stdout, r
    assert "read by the step (it read os.environ whole): NEW_ZB unset -> '1'" in r.stdout, r
    assert "environment variables it read: all of os.environ (" in r.stdout, r
    r = project.cli("run", env={"LR": "0.5", "GIT_INDEX_FILE": "/tmp/i", "MAKEFLAGS": "-j2",
                                "HOME": "/elsewhere"})
    assert project.ticks() == [] and r.executed == [], r
    r = project.cli("run", env={"LR": "0.5", "MODE": "fast"})  # a new name: both steps see it
    assert sorted(project.ticks()) == ["show", "tool", "train"], r
    assert project.read("build/show.txt") == "0.5 fast", r
    r = project.cli("run")  # LR unset again: the first entries are served
    assert project.read("build/show.txt") == "0.1 -", r
    assert project.ticks() == [] and r.executed == [], r


SCRIPTED = '''
import subprocess

from zenbuild import pipeline, step
from ticker import tick


@step
def prep() -> str:
    tick("prep")
    return subprocess.run(["bash", "scripts/prep.sh", "--input=data/raw.txt"],
                          capture_output=True, text=True, check=True).stdout


@step
def shell() -> str:
    tick("shell")
    return subprocess.run("wc -l < data/lines.txt", shell=True, capture_output=True,
                          text=True, check=True).stdout.strip()


@pipeline
def p():
    prep()
    shell()
'''


def test_a_script_or_file_named_on_a_subprocess_command_line_reruns_its_step(
        project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", SCRIPTED)
    project.write("scripts/prep.sh", 'echo "v1 $(cat "${1#--input=}")"\n')
    project.write("data/raw.txt", "raw\n")
    project.write("data/lines.txt", "a\nb\n")
    r = project.cli("run")
    assert sorted(project.ticks()) == ["prep", "shell"], r
    r = project.cli("run")
    assert project.ticks() == [], r
    project.write("scripts/prep.sh", 'echo "v2 $(cat "${1#--input=}")"\n')  # the script
    r = project.cli("explain", "prep")
    assert "read by the step, not declared: scripts/prep.sh" in r.stdout, r
    r = project.cli("run")
    assert project.ticks() == ["prep"], r
    project.write("data/raw.txt", "raw2\n")  # a file given to it
    r = project.cli("run")
    assert project.ticks() == ["prep"], r
    project.write("data/lines.txt", "a\nb\nc\n")  # redirected into a shell command
    r = project.cli("run")
    assert project.ticks() == ["shell"], r
    r = project.cli("run", "--json")
    assert project.ticks() == [], r


PROFILED = '''
import cProfile
import importlib
import sys

from zenbuild import pipeline, step
from ticker import tick


@step
def a(mod: str = "ops", op: str = "double") -> int:
    tick("a")
    pr = cProfile.Profile()
    pr.enable()  # below 3.12 this replaces the tracer zenbuild records calls with
    v = getattr(importlib.import_module(mod), op)(5)
    pr.disable()
    return v


@step
def b(mod: str = "ops", op: str = "double") -> int:
    tick("b")
    return getattr(importlib.import_module(mod), op)(5)


@pipeline
def p():
    a()
    b()
'''


def test_a_step_that_profiles_itself_is_not_cached_below_3_12(project: Project) -> None:
    """A profiler the step starts replaces the call tracer on Python < 3.12: the code it then
    reaches dynamically is unknown, so its result must not be cached (it was served stale
    after ops.double changed)."""
    import sys

    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PROFILED)
    project.write("ops.py", "def double(x):\n    return 2 * x\n")
    r = project.cli("run")
    assert sorted(project.ticks()) == ["a", "b"], r
    r = project.cli("run")
    if sys.version_info < (3, 12):
        assert project.ticks() == ["a"], r
        assert "step a started a profiler of its own" in r.output, r
    else:  # sys.monitoring: the step's profiler and the tracer do not meet
        assert project.ticks() == [], r
    project.write("ops.py", "def double(x):\n    return 3 * x\n")
    r = project.cli("run")
    assert sorted(project.ticks()) == ["a", "b"], r


POOLED = '''
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from zenbuild import pipeline, step
from ticker import tick


def read(path):
    with open(path) as f:
        return int(f.read())


@step
def pooled() -> int:
    tick("pooled")
    with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        return sum(ex.map(read, ["data/a.txt", "data/b.txt"]))


@step
def loader() -> float:
    tick("loader")
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor(float(read(f"data/{'ab'[i]}.txt")))

    return float(sum(b.sum() for b in DataLoader(Files(), batch_size=1, num_workers=2,
                                                 multiprocessing_context="fork")))


@step
def show(n: int, f: float) -> None:
    tick("show")
    print("VALUE", n, f)


@pipeline
def p():
    show(pooled(), loader())
'''


def test_files_read_by_forked_workers_rerun_their_step(project: Project) -> None:
    """A process pool or a DataLoader's workers (fork) read the data: editing it reruns the
    step (it was served stale, the workers' reads never reached the step's trace)."""
    import pytest

    pytest.importorskip("torch")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", POOLED)
    project.write("data/a.txt", "1")
    project.write("data/b.txt", "2")
    r = project.cli("run")
    assert sorted(project.ticks()) == ["loader", "pooled", "show"], r
    assert "VALUE 3 3.0" in r.output, r
    r = project.cli("run")
    assert project.ticks() == [], r
    project.write("data/b.txt", "10")
    r = project.cli("explain", "pooled")
    assert "read while it ran, not declared: data/a.txt, data/b.txt" in r.stdout, r
    r = project.cli("run")
    assert sorted(project.ticks()) == ["loader", "pooled", "show"], r
    assert "VALUE 11 11.0" in r.output, r
