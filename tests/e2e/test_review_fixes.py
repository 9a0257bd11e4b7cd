"""End-to-end: fixes from a new-user review, through the real CLI: the [steps.NAME] typo check
against the traced pipeline's real names, TOML dates as params and config fields, a damaged
.zenbuild/secret.key, and API / selection mistakes worded for where they were made."""

from __future__ import annotations

import os
import textwrap

import pytest

SECRET_PIPE = '''
from zenbuild import step, pipeline, Env, Output
from ticker import tick


@step
def call_api(token: str) -> int:
    tick("call_api")
    return len(token)


@step
def report(n: int, out: Output) -> None:
    tick("report")
    out.write_text(str(n))


@pipeline
def api():
    report(call_api(Env("ZB_TEST_TOKEN", secret=True)), Output("build/report.txt"))
'''


def _user_error(r, *parts: str) -> None:
    """Exit 2, one paragraph with every part, no traceback."""
    assert r.returncode == 2, r
    for p in parts:
        assert p in r.output, r
    assert "Traceback" not in r.output, r


@pytest.mark.parametrize("damage", ["short", "long", "folder"])
def test_a_damaged_secret_key_is_a_clear_error_and_deleting_it_recovers(project, damage):
    project.write("zenbuild.toml", 'pipelines = ["pipe:api"]\n')
    project.write("pipe.py", SECRET_PIPE)
    env = {"ZB_TEST_TOKEN": "hunter2"}
    assert project.run("run", env=env).executed == ["call_api", "report"]
    key = project.root / ".zenbuild" / "secret.key"
    assert len(key.read_bytes()) == 32
    key.unlink()
    if damage == "folder":
        key.mkdir()
        what = "is a folder"
    else:
        key.write_bytes(b"abc" if damage == "short" else os.urandom(40))
        what = "is damaged"
    project.ticks()
    r = project.run("run", env=env, check=None)
    _user_error(r, str(key), what, "Delete", "every step that takes a secret Env then executes once")
    assert project.ticks() == []
    if damage == "folder":
        key.rmdir()
    else:
        key.unlink()
    r = project.run("run", env=env)
    assert r.executed == ["call_api"] and project.ticks() == ["call_api"]  # report: cut off
    assert project.run("run", env=env).executed == []


GREET_PIPE = '''
from zenbuild import step, pipeline, File, Output
from ticker import tick

GREETING = "hello"
LABEL = "salutation"


@step
def greet(src: File, out: Output) -> None:
    tick("greet")
    out.write_text(GREETING + " " + src.read_text())


@pipeline
def hello():
    greet(File("name.txt"), Output("build/greeting.txt"))
'''


@pytest.mark.parametrize("section,suggest", [
    ("greet_2", "greet"),   # greet is called once: there is no greet_2
    ("hello", None),        # the pipeline's own name is no step
    ("File", None),         # an imported name
    ("salutation", None),   # a string constant in the module
    ("greett", "greet"),    # a plain typo
])
def test_a_steps_section_must_name_a_real_step_of_the_traced_pipeline(project, section, suggest):
    project.write("pipe.py", GREET_PIPE)
    project.write("name.txt", "world")
    project.write("zenbuild.toml",
                  f'pipelines = ["pipe:hello"]\n\n[steps.{section}]\nenable_cache = false\n')
    r = project.run("run", check=None)
    _user_error(r, f"zenbuild.toml:3: [steps.{section}] names no step or call",
                "(steps and calls: greet)")
    if suggest:
        assert f"did you mean '{suggest}'?" in r.output, r
    assert project.ticks() == []
    project.write("zenbuild.toml", 'pipelines = ["pipe:hello"]\n\n[steps.greet]\n'
                  'enable_cache = false\n')
    assert project.run("run").executed == ["greet"]
    assert project.run("run").executed == ["greet"]  # the section applies: never cached


def _api(project, code: str):
    """Run ``code`` in a fresh interpreter in the project folder (pipe.py importable)."""
    import subprocess
    import sys

    env = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=project.root,
                          capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_python_api_checks_steps_sections_against_the_traced_pipeline(project):
    project.write("pipe.py", GREET_PIPE)
    project.write("name.txt", "world")
    project.write("zenbuild.toml", 'pipelines = ["pipe:hello"]\n\n[steps.File]\nenable_cache = false\n')
    code, out = _api(project, '''
        from zenbuild import ConfigError
        from pipe import hello
        try:
            hello().run()
        except ConfigError as e:
            print("ConfigError:", e)
        ''')
    assert code == 0 and "zenbuild.toml:3: [steps.File] names no step" in out, out
    assert project.ticks() == []


DATE_PIPE = '''
import dataclasses
import datetime

from zenbuild import step, pipeline, Output
from ticker import tick


@dataclasses.dataclass(frozen=True)
class Window:
    start: datetime.date
    at: datetime.time = datetime.time(9, 0)


@step
def plan(day: datetime.date, when: datetime.datetime, w: Window, out: Output) -> None:
    tick("plan")
    out.write_text(f"{day!r} {when.isoformat()} {w.start!r} {w.at!r}")


@pipeline
def sched(day: datetime.date = datetime.date(2024, 1, 1),
          when: datetime.datetime = datetime.datetime(2024, 1, 1, 12),
          w: Window = Window(datetime.date(2024, 1, 1))):
    plan(day, when, w, Output("build/plan.txt"))
'''

DATE_TOML = '''pipelines = ["pipe:sched"]
[params]
day = 2024-03-05
when = 2024-03-05T10:00:00+01:00
w = {start = 2024-02-02, at = 08:30:00}
'''


def test_toml_dates_datetimes_and_times_are_params_and_config_fields(project):
    project.write("pipe.py", DATE_PIPE)
    project.write("zenbuild.toml", DATE_TOML)
    assert project.run("run").executed == ["plan"]
    assert project.read("build/plan.txt") == (
        "datetime.date(2024, 3, 5) 2024-03-05T10:00:00+01:00 datetime.date(2024, 2, 2) "
        "datetime.time(8, 30)")
    assert project.run("run").executed == []  # a date has one encoding: cached
    # the same day as an ISO string on the command line is the same value
    assert project.run("run", "--param", "day=2024-03-05").executed == []
    # the same instant at another UTC offset is another param: the offset is kept
    r = project.run("run", "--param", "when=2024-03-05T09:00:00+00:00")
    assert r.executed == ["plan"]
    assert "2024-03-05T09:00:00+00:00" in project.read("build/plan.txt")
    r = project.run("run", "--param", 'w={"start": "2024-02-03"}')
    assert r.executed == ["plan"]
    assert "datetime.date(2024, 2, 3) datetime.time(9, 0)" in project.read("build/plan.txt")
    _user_error(project.run("run", "--param", "day=5 March", check=None),
                "--param day=5 March: cannot convert to date (ISO 8601, like 2024-03-05)")
    project.write("zenbuild.toml", DATE_TOML.replace("day = 2024-03-05", "day = 2024-03-05T10:00:00"))
    _user_error(project.run("run", check=None), "zenbuild.toml:3: params.day",
                "a datetime, not a date")


def test_an_argument_with_no_encoding_names_its_path(project):
    project.write("pipe.py", '''
        import dataclasses
        import threading

        from zenbuild import step, pipeline
        from ticker import tick


        @dataclasses.dataclass(frozen=True)
        class Cfg:
            lock: object
            n: int = 1


        @step
        def use(cfg: Cfg) -> None:
            tick("use")


        @pipeline
        def p():
            use({"main": [Cfg(threading.Lock())]})
        ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    _user_error(project.run("run", check=None),
                "step use, argument cfg['main'][0].lock: a value of type _thread.lock has no "
                "deterministic encoding")
    assert project.ticks() == []


PARSE_PIPE = '''
import dataclasses

from zenbuild import step, pipeline, File, Output, Env
from ticker import tick


@dataclasses.dataclass(frozen=True)
class Cfg:
    token: object = None


@step
def parse(src: File) -> str:
    tick("parse")
    return src.read_text()


@step
def write(text: str, out: Output) -> None:
    tick("write")
    out.write_text(text)


@step
def use(cfg: Cfg) -> None:
    tick("use")


@pipeline
def main(epochs: int = 1):
    write(parse(File("in.txt")), Output("build/out.txt"))


@pipeline
def nested():
    use(Cfg(Env("HOME")))
'''


@pytest.fixture
def parse_project(project):
    project.write("pipe.py", PARSE_PIPE)
    project.write("in.txt", "hi")
    project.write("zenbuild.toml", 'pipelines = ["pipe:main", "pipe:nested"]\n')
    return project


def test_a_rerun_the_step_selection_leaves_out_is_refused_on_the_command_line(parse_project):
    p = parse_project
    assert p.run("run", "main").executed == ["parse", "write"]
    p.ticks()
    r = p.run("run", "main", "--step", "parse", "--rerun", "write", check=None)
    _user_error(r, "--rerun write: step write does not run in this run: --step parse selects "
                "only parse", "add --step write")
    assert p.ticks() == []
    # rerunning a step the selection does need is fine
    assert p.run("run", "main", "--step", "write", "--rerun", "parse").executed == ["parse"]
    assert p.ticks() == ["parse"]


def test_a_config_object_holding_an_env_says_to_pass_env_as_a_step_argument(parse_project):
    r = parse_project.run("run", "nested", check=None)
    _user_error(r, "step use, argument cfg.token: Env('HOME') is inside a config object",
                "Pass it to the step as an argument of its own")
    assert parse_project.ticks() == []


def test_python_api_mistakes_are_worded_for_the_api(parse_project):
    code, out = _api(parse_project, '''
        from zenbuild import ZenbuildError
        from pipe import main
        calls = [
            lambda: main().run(rerun=["nope"]),
            lambda: main().run(steps="nope"),
            lambda: main().run(steps=["parse"], rerun=["write"]),
            lambda: main().run(now="x"),
            lambda: main.run(epoch=3),
        ]
        for call in calls:
            try:
                call()
                print("NO ERROR")
            except ZenbuildError as e:
                print(f"{type(e).__name__} {e.exit_code}: {e}")
        ''')
    assert code == 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 5, out
    assert lines[0].startswith("PipelineError 2: rerun=['nope']: pipeline main has no step "
                               "named 'nope'. Its steps are: parse, write.")
    assert lines[1].startswith("PipelineError 2: steps=['nope']: pipeline main has no step")
    assert lines[2].startswith("PipelineError 2: rerun=['write']: step write does not run in "
                               "this run: steps=['parse'] selects only parse")
    assert lines[3].startswith("ParamError 2: run(now='x'): now is the wall time cached "
                               "results are aged by, as seconds since the epoch")
    assert lines[4] == ("PipelineError 2: pipeline main: got an unexpected keyword argument "
                        "'epoch' (did you mean 'epochs'?) (parameters: epochs)")
    assert "--rerun" not in out and "--step" not in out and "Traceback" not in out
    assert parse_project.ticks() == []
