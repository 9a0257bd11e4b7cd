"""End-to-end: every command comes in through one front door with one error policy. A user's
mistake (config, import, pipeline body, params) is exit 2 with one paragraph naming the file and
line and no zenbuild frames; the root comes from the pipeline's code; [tool.zenbuild] survives
the parsed-config cache; project code never runs from a stale .pyc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import REPO, Project

import zenbuild

PKG = os.path.dirname(os.path.realpath(zenbuild.__file__))

PIPE = '''
from zenbuild import File, pipeline, step
from ticker import tick
import helpers


@step
def load_step(src: File) -> str:
    tick("load_step")
    return src.read_text()


@step
def shout(text: str) -> str:
    tick("shout")
    return helpers.shout(text)


@pipeline
def demo(loader=load_step, times: int = 1):
    shout(loader(File("a.txt")))
'''
HELPERS = 'def shout(text):\n    return text.strip().upper() + "!"\n'


@pytest.fixture
def demo(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n')
    project.write("pipe.py", PIPE)
    project.write("helpers.py", HELPERS)
    project.write("a.txt", "hello\n")
    return project


# Each case: how to break the project, the extra CLI args, and the file:line the message names.
def _name_error(p: Project) -> None:
    p.write("pipe.py", PIPE.replace("    shout(loader(", "    shout(no_such_name, loader("))


def _import_error(p: Project) -> None:
    p.write("helpers.py", "import os\nraise RuntimeError('helpers cannot load')\n")


def _bad_config(p: Project) -> None:
    p.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n\n[watch]\ndebounce_ms = "soon"\n')


CASES = {
    "name-error-in-body": (_name_error, [], "pipe.py:21", "NameError"),
    "step-passed-as-string": (None, ["--param", "loader=load_step"], "pipe.py:21",
                              "not callable"),
    "import-error": (_import_error, [], "helpers.py:2", "helpers cannot load"),
    "bad-config": (_bad_config, [], "zenbuild.toml:4", "debounce_ms"),
    "bad-param": (None, ["--param", "times=many"], "pipe.py:19", "cannot convert to int"),
}
COMMANDS = {
    "run": ["run"],
    "explain": ["explain", "shout"],
    "status": ["status"],
    "graph": ["graph"],
}


def _assert_user_error(res_code: int, stderr: str, where: str, what: str) -> None:
    assert res_code == 2, stderr
    assert "Error: " in stderr, stderr
    assert where in stderr, stderr
    assert what in stderr, stderr
    assert PKG not in stderr, stderr  # no zenbuild frames
    assert "Traceback (most recent call last)" not in stderr, stderr


# graph takes no --param: its pipeline is bound with the defaults and [params]
PAIRS = [(c, k) for c in COMMANDS for k in CASES if not (c == "graph" and CASES[k][1])]


@pytest.mark.parametrize("command,case", PAIRS)
def test_front_door_errors_are_exit_2_with_file_line_and_no_zenbuild_frames(
        demo: Project, command: str, case: str) -> None:
    breaker, extra, where, what = CASES[case]
    if breaker is not None:
        breaker(demo)
    res = demo.run(*COMMANDS[command], *extra, check=None)
    _assert_user_error(res.returncode, res.stderr, where, what)
    assert demo.ticks() == []  # nothing ran


def test_a_syntax_error_names_the_file_and_line(demo: Project) -> None:
    demo.write("helpers.py", "def shout(text:\n    return 1\n")
    res = demo.run("run", check=2)
    assert "syntax error in helpers.py line 1" in res.stderr, res
    assert PKG not in res.stderr


def test_a_bug_in_zenbuild_is_exit_1_with_its_traceback(demo: Project) -> None:
    # Break zenbuild itself for this process only: the tracer hands a step to binding.Params
    # as if it were a function, so an AttributeError is raised inside zenbuild's own code.
    sitecustom = demo.root / "zb_break"
    sitecustom.mkdir()
    (sitecustom / "sitecustomize.py").write_text(
        "import zenbuild.dsl as d\nfrom zenbuild.binding import Params\n"
        "d.Step.__call__ = lambda self, *a, **k: Params(None)\n")
    env = {"PYTHONPATH": os.pathsep.join([str(sitecustom), str(REPO)])}
    res = demo.run("run", env=env, check=1)
    assert "Traceback (most recent call last)" in res.stderr, res
    assert "AttributeError" in res.stderr and os.path.join(PKG, "binding.py") in res.stderr, res


# -- watch: the child reports the mistake and keeps watching (README: "it never dies on ...")
def test_watch_reports_a_front_door_error_and_rebuilds_after_the_fix(demo: Project) -> None:
    from e2e.test_watch import SUMMARY, Watch  # the same line reader as the watch tests

    _name_error(demo)
    w = Watch(demo)
    try:
        lines = w.until(r"^waiting for the next save\.$")
        text = "\n".join(lines)
        assert "NameError" in text and "pipe.py:21" in text, text
        assert PKG not in text, text
        demo.write("pipe.py", PIPE)
        lines = w.until(SUMMARY.pattern)
        assert [x for x in lines if x.startswith("Step ") and "finished" in x], lines
        assert sorted(demo.ticks()) == ["load_step", "shout"]
    finally:
        assert w.stop() == 0, "\n".join(w.log)


# -- issue 10 item 6: the root is where the pipeline's code lives, not the cwd
def test_a_script_run_from_outside_the_project_uses_the_projects_root(demo: Project,
                                                                     tmp_path: Path) -> None:
    demo.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\nstore = ".store"\n')
    demo.write("sub/script.py", """
        import os, sys
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        import pipe
        res = pipe.demo().run()
        print("EXECUTED", sorted(res.executed()))
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    env.pop("CI", None)

    def script() -> str:
        proc = subprocess.run([sys.executable, "../proj/sub/script.py"], cwd=elsewhere,
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "EXECUTED ['load_step', 'shout']" in script()
    assert (demo.root / ".store").is_dir() and not (elsewhere / ".zenbuild").exists()
    assert list(elsewhere.iterdir()) == []
    demo.write("helpers.py", HELPERS.replace('"!"', '"?"'))  # the project's helper: seen
    assert "EXECUTED ['shout']" in script()
    assert "EXECUTED []" in script()


# -- issue 10 item 9: [tool.zenbuild] in pyproject.toml survives the parsed-config cache
def test_pyproject_config_works_on_the_second_run_too(demo: Project) -> None:
    os.unlink(demo.root / "zenbuild.toml")
    demo.write("pyproject.toml", """
        [project]
        name = "demo"

        [tool.zenbuild]
        pipelines = ["pipe:demo"]

        [tool.zenbuild.params]
        times = 3
    """)
    demo.write("pipe.py", PIPE.replace("    shout(loader(File(\"a.txt\")))",
                                       "    shout(loader(File(\"a.txt\")))\n    echo(times)") + '''

@step
def echo(times: int) -> int:
    tick(f"echo{times}")
    return times
''')
    first = demo.cli("run")
    assert sorted(demo.ticks()) == ["echo3", "load_step", "shout"], first
    second = demo.cli("run")  # the store exists now: this run keeps the parse for the next
    assert demo.ticks() == [], second
    assert (demo.root / ".zenbuild" / "config-cache.json").is_file()
    third = demo.cli("run")  # the parse comes from the cache: pipelines and params intact
    assert demo.ticks() == [], third
    assert sorted(third.cached) == ["echo", "load_step", "shout"]
    demo.write("pyproject.toml", demo.read("pyproject.toml").replace("times = 3", "times = 4"))
    demo.cli("run")
    assert demo.ticks() == ["echo4"]


# -- tester r1 finding 10: zenbuild.toml beside a pyproject.toml [tool.zenbuild] table
def test_two_config_files_are_an_error_naming_both(demo: Project) -> None:
    demo.write("pyproject.toml", """
        [project]
        name = "demo"

        [tool.zenbuild]
        pipelines = ["pipe:demo"]

        [tool.zenbuild.params]
        times = 5
    """)
    for args in (("run",), ("status",), ("explain", "shout")):
        r = demo.cli(*args, check=2)
        assert str(demo.root / "zenbuild.toml") in r.output, r
        assert str(demo.root / "pyproject.toml") in r.output, r
        assert "Traceback" not in r.output and demo.ticks() == [], r
    # a pyproject.toml with no [tool.zenbuild] table (only a mention of it) is no second config
    demo.write("pyproject.toml", '[project]\nname = "demo"\n# see [tool.zenbuild] docs\n')
    demo.cli("run")


# -- issue 10 item 7: never a stale .pyc for project code
def test_a_same_size_edit_in_the_same_second_runs_the_new_code(demo: Project) -> None:
    env = {"PYTHONDONTWRITEBYTECODE": ""}  # bytecode writing on, as users have it
    demo.run("run", env=env)
    demo.ticks()
    helpers = demo.root / "helpers.py"
    import py_compile

    py_compile.compile(str(helpers), doraise=True)  # a .pyc that matches mtime and size
    before = os.stat(helpers)
    helpers.write_text(HELPERS.replace('"!"', '"?"'))  # same size
    os.utime(helpers, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    res = demo.run("run", "--json", env=env)
    assert demo.ticks() == ["shout"], res
    value = _output_of(demo, "shout")
    assert value == "HELLO?", value


def _output_of(p: Project, step: str) -> object:
    code = ("import sys; sys.path.insert(0, '.'); import pipe; r = pipe.demo().run(); "
            f"print('VALUE=' + repr(r[{step!r}].output))")
    env: Dict[str, str] = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=p.root, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines: List[str] = [x for x in proc.stdout.splitlines() if x.startswith("VALUE=")]
    return eval(lines[-1][len("VALUE="):])  # noqa: S307 - our own repr of a str


def test_a_step_opening_another_steps_output_it_does_not_depend_on_gets_a_hint(
        tmp_path: Path) -> None:
    """The step that reads build/made.txt runs first (nothing orders it after the step that
    makes it): the failure says which step declares the file and how to order the two."""
    from tests.conftest import Project

    project = Project(tmp_path / "proj")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from pathlib import Path
        from zenbuild import Output, pipeline, step

        @step
        def use() -> str:
            return Path("build/made.txt").read_text()

        @step
        def make(out: Output) -> None:
            out.write_text("x")

        @pipeline
        def p():
            use()
            make(Output("build/made.txt"))
        """)
    r = project.cli("run", check=1)
    assert "FileNotFoundError" in r.output, r
    assert ("Hint: build/made.txt is an Output of step make, and nothing orders step use after "
            "it. Pass File('build/made.txt')") in r.output, r
