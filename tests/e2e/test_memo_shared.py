"""End-to-end: two steps served one memoized loader's result in one process (a serial run).
Only the first step's code really reads conf.json / DEVICE; the second gets the remembered
result. Both must rerun when the file or variable changes (zenbuild.trace.memo), and a plain
helper called by several steps with different paths must not give each the others' files."""

from __future__ import annotations

import pytest

from tests.conftest import Project

CFG = {
    "lru": '''
import functools, json, os

@functools.lru_cache(maxsize=None)
def config():
    with open("conf.json") as f:
        return json.load(f)

@functools.cache
def device():
    return os.getenv("DEVICE", "cpu")
''',
    "global_dict": '''
import json, os

_CACHE = {}

def config():
    if "c" not in _CACHE:
        with open("conf.json") as f:
            _CACHE["c"] = json.load(f)
    return _CACHE["c"]

def device():
    if "d" not in _CACHE:
        _CACHE["d"] = os.environ.get("DEVICE", "cpu")
    return _CACHE["d"]
''',
    "global_assign": '''
import json, os

_CONF = None
_DEV = None

def config():
    global _CONF
    if _CONF is None:
        with open("conf.json") as f:
            _CONF = json.load(f)
    return _CONF

def device():
    global _DEV
    if _DEV is None:
        _DEV = os.environ.get("DEVICE", "cpu")
    return _DEV
''',
    "closure_decorator": '''
import json, os

def memo(fn):
    cache = {}
    def wrapper():
        if "v" not in cache:
            cache["v"] = fn()
        return cache["v"]
    return wrapper

@memo
def config():
    with open("conf.json") as f:
        return json.load(f)

@memo
def device():
    return os.environ.get("DEVICE", "cpu")
''',
    "lru_method": '''
import functools, json, os

class Settings:
    @staticmethod
    @functools.lru_cache(maxsize=None)
    def config():
        with open("conf.json") as f:
            return json.load(f)

    @classmethod
    @functools.lru_cache(maxsize=None)
    def device(cls):
        return os.environ.get("DEVICE", "cpu")

def config():
    return Settings.config()

def device():
    return Settings.device()
''',
}

PIPE = '''
from zenbuild import Output, pipeline, step
from cfg import config, device
from ticker import tick


@step
def train() -> str:
    tick("train")
    return f"train lr={config()['lr']} on {device()}"


@step
def evaluate() -> str:
    tick("evaluate")
    return f"eval lr={config()['lr']} on {device()}"


@step
def report(a: str, b: str, out: Output) -> None:
    out.write_text(a + "\\n" + b + "\\n")


@pipeline
def p():
    report(train(), evaluate(), Output("build/report.txt"))
'''


def _make(project: Project, cfg: str) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("conf.json", '{"lr": 0.1}')
    project.write("cfg.py", cfg)
    project.write("pipe.py", PIPE)


@pytest.mark.parametrize("kind", sorted(CFG))
def test_both_steps_rerun_when_a_memoized_read_changes(project: Project, kind: str) -> None:
    _make(project, CFG[kind])
    project.cli("run", "-j", "1")
    assert sorted(project.ticks()) == ["evaluate", "train"]
    assert project.read("build/report.txt") == "train lr=0.1 on cpu\neval lr=0.1 on cpu\n"

    project.write("conf.json", '{"lr": 0.2}')
    r = project.cli("run", "-j", "1")
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.2 on cpu\neval lr=0.2 on cpu\n"

    r = project.cli("run", "-j", "1", env={"DEVICE": "cuda"})
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.2 on cuda\neval lr=0.2 on cuda\n"

    r = project.cli("explain", "evaluate", env={"DEVICE": "cuda"})
    assert "conf.json" in r.output, r
    r = project.cli("run", "-j", "1", env={"DEVICE": "cuda"})
    assert project.ticks() == [], r  # and then a no-op


def test_a_declared_input_read_by_a_shared_memo_reaches_the_other_step(project: Project) -> None:
    _make(project, CFG["lru"])
    project.write("pipe.py", PIPE.replace("from zenbuild import Output,",
                                          "from zenbuild import File, Output,")
                  .replace("def train() -> str:", "def train(conf) -> str:")
                  .replace("report(train(),", 'report(train(File("conf.json")),'))
    project.cli("run")
    project.ticks()
    project.write("conf.json", '{"lr": 0.3}')
    r = project.cli("run")
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.3 on cpu\neval lr=0.3 on cpu\n"


def test_a_plain_helper_shared_by_steps_keeps_each_steps_own_reads(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("a.txt", "a1")
    project.write("b.txt", "b1")
    project.write("io_helpers.py", '''
def load(path):
    with open(path) as f:
        return f.read()
''')
    project.write("pipe.py", '''
from zenbuild import pipeline, step
from io_helpers import load
from ticker import tick


@step
def first() -> str:
    tick("first")
    return load("a.txt")


@step
def second() -> str:
    tick("second")
    return load("b.txt")


@pipeline
def p():
    first()
    second()
''')
    project.cli("run")
    project.ticks()
    project.write("a.txt", "a2")
    r = project.cli("run")
    assert project.ticks() == ["first"], r


API_SCRIPT = '''
import json, os, sys
sys.path.insert(0, {root!r})
os.chdir({root!r})
import pipe

pipe.p().run()
with open("conf.json", "w") as f:
    f.write('{{"lr": 0.5}}')
pipe.p().run()  # the memo in this process still holds lr 0.1
'''


def test_the_python_api_never_stores_a_memo_older_than_its_file(project: Project) -> None:
    """Two pipeline().run() calls in one process with conf.json edited between them: the
    lru memo still holds the old content, so the second run's train and evaluate compute from
    it; their results must not be stored as if they had seen the new file, or a later
    `zenbuild run` would serve lr=0.1 as up to date."""
    import subprocess
    import sys

    _make(project, CFG["lru"])
    code = API_SCRIPT.format(root=str(project.root))
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    project.ticks()
    r = project.cli("run")
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.5 on cpu\neval lr=0.5 on cpu\n"


@pytest.mark.parametrize("kind", sorted(CFG))
def test_a_memo_the_pipeline_body_fills_first_gives_its_reads_to_the_steps(
        project: Project, kind: str) -> None:
    """The pipeline body wires the DAG from the memoized loader, so it fills the memo before
    any step runs; the steps then get the remembered result. They were served stale after
    conf.json (or DEVICE) changed: the body's reads were recorded by no one."""
    _make(project, CFG[kind])
    project.write("pipe.py", PIPE.replace(
        "    report(train(), evaluate(), Output(\"build/report.txt\"))",
        "    if config()[\"lr\"] > 0 and device():  # the DAG comes from the config\n"
        "        report(train(), evaluate(), Output(\"build/report.txt\"))"))
    project.cli("run")
    assert sorted(project.ticks()) == ["evaluate", "train"]
    project.write("conf.json", '{"lr": 0.2}')
    r = project.cli("run")
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.2 on cpu\neval lr=0.2 on cpu\n"
    r = project.cli("run", env={"DEVICE": "cuda"})
    assert sorted(project.ticks()) == ["evaluate", "train"], r
    assert project.read("build/report.txt") == "train lr=0.2 on cuda\neval lr=0.2 on cuda\n"
    r = project.cli("run", env={"DEVICE": "cuda"})
    assert project.ticks() == [], r
