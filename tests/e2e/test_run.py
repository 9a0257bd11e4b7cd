"""End-to-end: the real CLI on projects in tmp_path; which steps executed, exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

PIPE = '''
from zenbuild import step, pipeline, File, Output, no_cache
from ticker import tick
from helpers import tokenize, THRESHOLD
import helpers


@step
def load(src: File) -> list:
    tick("load")
    return src.read_text().splitlines()


@step
def count(lines: list, top: int = 10) -> dict:
    tick("count")
    c = {}
    for line in lines:
        for w in tokenize(line):
            c[w] = c.get(w, 0) + 1
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


@step
def keep(counts: dict) -> dict:
    tick("keep")
    return {k: v for k, v in counts.items() if v >= THRESHOLD}


@step
def render(counts: dict, out: Output) -> None:
    tick("render")
    out.write_text(helpers.fmt(counts))


@pipeline
def report(data: str = "data/words.txt", top: int = 10):
    counts = count(load(File(data)), top=top)
    render(keep(counts), Output("build/report.md"))
'''

HELPERS = '''
THRESHOLD = 1


def tokenize(line):
    return line.split()


def fmt(counts):
    return "".join(f"{k}: {v}\\n" for k, v in counts.items())
'''


@pytest.fixture
def wc(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:report"]\n')
    project.write("pipe.py", PIPE)
    project.write("helpers.py", HELPERS)
    project.write("data/words.txt", "a b c\nb c\nc\n")
    r = project.run("run")
    assert r.executed == ["load", "count", "keep", "render"]
    assert project.ticks() == ["load", "count", "keep", "render"]
    return project


def test_second_run_is_fully_cached_with_seed_log_lines(wc):
    r = wc.run("run")
    assert wc.ticks() == []
    lines = [ln for ln in r.stdout.splitlines()]
    assert lines[:2] == ["Step load has started.", "Using cached version of load."]
    assert r.cached == ["load", "count", "keep", "render"]
    assert lines[-1].startswith("0 executed, 4 cached in ")
    assert wc.read("build/report.md") == "c: 3\nb: 2\na: 1\n"


def test_executed_line_format(wc):
    r = wc.run("run", "--no-cache")
    for name in ["load", "count", "keep", "render"]:
        assert f"Step {name} has started." in r.stdout
    assert any(
        ln.startswith("Step render has finished in ") and ln.endswith("s.")
        for ln in r.stdout.splitlines()
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("def tokenize(line):", "def tokenize(line):  # split words"),
        lambda s: s.replace("def tokenize(line):", 'def tokenize(line):\n    """Split."""'),
        lambda s: s.replace("return line.split()", "return   line.split( )") + "\n\n# end\n",
    ],
    ids=["comment", "docstring", "whitespace"],
)
def test_cosmetic_helper_edits_do_not_invalidate(wc, edit):
    wc.write("helpers.py", edit(HELPERS))
    r = wc.run("run")
    assert wc.ticks() == [], r
    assert r.executed == []


def test_step_decorator_change_does_not_invalidate_but_body_does(wc):
    wc.write("pipe.py", PIPE.replace("@step\ndef keep", "@step()\ndef keep"))
    wc.run("run")
    assert wc.ticks() == []
    wc.write("pipe.py", PIPE.replace("if v >= THRESHOLD}", "if v >= THRESHOLD and k}"))
    wc.run("run")
    assert wc.ticks() == ["keep"]  # same output: render stays cached (early cutoff)


def test_helper_change_reruns_only_its_callers(wc):
    wc.write("helpers.py", HELPERS.replace("return line.split()", "return line.upper().split()"))
    r = wc.run("run", "--explain")
    assert wc.ticks() == ["count", "keep", "render"]
    assert "code: helper helpers.tokenize (helpers.py) changed" in r.stdout
    assert wc.read("build/report.md") == "C: 3\nB: 2\nA: 1\n"


def test_helper_reached_through_module_attribute(wc):
    wc.write("helpers.py", HELPERS.replace('f"{k}: {v}\\n"', 'f"{k}={v}\\n"'))
    wc.run("run")
    assert wc.ticks() == ["render"]
    assert wc.read("build/report.md") == "c=3\nb=2\na=1\n"


def test_constant_change_reruns_its_users(wc):
    wc.write("helpers.py", HELPERS.replace("THRESHOLD = 1", "THRESHOLD = 2"))
    r = wc.run("run", "--explain")
    assert wc.ticks() == ["keep", "render"]
    assert "code: constant helpers.THRESHOLD (helpers.py) changed" in r.stdout
    assert wc.read("build/report.md") == "c: 3\nb: 2\n"


def test_param_change_and_cli_param_conversion(wc):
    r = wc.run("run", "--param", "top=2", "--explain")
    assert wc.ticks() == ["count", "keep", "render"]
    assert "param top: 10 -> 2" in r.stdout
    wc.run("run", "--param", "top=2")
    assert wc.ticks() == []
    # back to the default: served from the earlier entry, the output restored
    r = wc.run("run")
    assert wc.ticks() == []
    assert "Restored build/report.md from the store." in r.stdout
    assert wc.read("build/report.md") == "c: 3\nb: 2\na: 1\n"


def test_bad_param_value_names_the_parameter(wc):
    r = wc.run("run", "--param", "top=many", check=2)
    assert "top" in r.stderr and "int" in r.stderr
    assert "Traceback" not in r.stderr
    r = wc.run("run", "--param", "nope=1", check=2)
    assert "no parameter 'nope'" in r.stderr
    r = wc.run("run", "--param", "top", check=2)
    assert "KEY=VALUE" in r.stderr


def test_config_params_are_defaults_below_cli(wc):
    wc.write("zenbuild.toml", 'pipelines = ["pipe:report"]\n[params]\ntop = 1\n')
    wc.run("run")
    assert wc.ticks() == ["count", "keep", "render"]
    assert wc.read("build/report.md") == "c: 3\n"
    wc.run("run", "--param", "top=10")
    assert wc.ticks() == []  # the first run's entry
    assert wc.read("build/report.md") == "c: 3\nb: 2\na: 1\n"


def test_file_content_vs_mtime(wc):
    p = wc.root / "data/words.txt"
    os.utime(p, (time.time() + 5, time.time() + 5))
    wc.run("run")
    assert wc.ticks() == []
    p.write_text("a b c\nb c\nc\nz\n")
    r = wc.run("run", "--explain")
    assert wc.ticks() == ["load", "count", "keep", "render"]
    assert "file data/words.txt: content changed (12 B -> 14 B)" in r.stdout


def test_same_output_stops_propagation(wc):
    # a different input that yields the same counts: keep/render stay cached
    (wc.root / "data/words.txt").write_text("c b a\nc b\nc\n")
    wc.run("run")
    assert wc.ticks() == ["load", "count"]


def test_output_deleted_or_edited_is_restored_without_executing(wc):
    out = wc.root / "build/report.md"
    out.unlink()
    r = wc.run("run")
    assert wc.ticks() == []
    assert "Restored build/report.md from the store." in r.stdout
    assert out.read_text() == "c: 3\nb: 2\na: 1\n"
    out.write_text("hand edit")
    wc.run("run")
    assert wc.ticks() == []
    assert out.read_text() == "c: 3\nb: 2\na: 1\n"


def test_failure_skips_dependents_then_recovers(wc):
    wc.write("helpers.py", HELPERS.replace("return line.split()", "return 1 / 0"))
    r = wc.run("run", check=1)
    assert r.cached == ["load"] and r.executed == []
    assert "Step count failed" in r.stdout
    assert "Step keep skipped: upstream step count failed." in r.stdout
    assert "Step render skipped" in r.stdout
    assert "ZeroDivisionError" in r.stderr
    assert 'helpers.py", line' in r.stderr
    assert "zenbuild/" not in r.stderr  # zenbuild's own frames trimmed
    js = wc.run("run", "--json", check=1)
    data = json.loads(js.stdout)
    assert [s["status"] for s in data["steps"]] == ["cached", "failed", "skipped", "skipped"]
    assert data["status"] == "failed"
    wc.ticks()
    wc.write("helpers.py", HELPERS)
    wc.run("run")
    assert wc.ticks() == []  # the fix restores the old code: every entry is still in the store
    wc.write("helpers.py", HELPERS.replace("return line.split()", "return line.split(' ')"))
    wc.run("run")
    assert wc.ticks() == ["count"]


def test_json_output(wc):
    r = wc.run("run", "--json")
    data = json.loads(r.stdout)
    assert data["pipeline"] == "report"
    assert data["status"] == "succeeded"
    assert data["run_id"]
    assert [s["name"] for s in data["steps"]] == ["load", "count", "keep", "render"]
    for s in data["steps"]:
        assert set(s) == {"name", "status", "fingerprint", "duration_s"}
        assert s["status"] == "cached" and len(s["fingerprint"]) == 32
    assert "Using cached version of load." in r.stderr


def test_dry_run_executes_nothing(wc):
    wc.write("helpers.py", HELPERS.replace("THRESHOLD = 1", "THRESHOLD = 3"))
    r = wc.run("run", "--dry-run")
    assert wc.ticks() == []
    assert "Would execute keep: code: constant helpers.THRESHOLD (helpers.py) changed" in r.stdout
    assert "Would execute render: upstream step keep would execute" in r.stdout
    assert "0 executed, 2 cached, 2 would execute in" in r.stdout, r  # the summary says so
    wc.run("run")
    assert wc.ticks() == ["keep", "render"]


def test_quiet(wc):
    r = wc.run("run", "-q")
    assert r.stdout.strip().splitlines() == [r.stdout.strip().splitlines()[-1]]
    assert "0 executed, 4 cached" in r.stdout


def test_invalid_config_and_pipeline_errors(project):
    """Each mistake is exit 2 with one clear message and none of zenbuild's frames."""
    results = []

    def run(*args):
        r = project.run("run", *args, check=2)
        results.append(r)
        return r

    project.write("zenbuild.toml", 'pipelines = ["pipe:report"]\nstore = 3\n')
    assert "zenbuild.toml:2: store: expected a folder path" in run().stderr
    project.write("zenbuild.toml", 'pipelines = ["pipe:report"]\n\n[steps.x]\ncache = true\n')
    assert "zenbuild.toml:4: steps.x.cache: unknown key" in run().stderr
    project.write("zenbuild.toml", 'pipelines = ["pipe:report"\n')
    assert "invalid TOML" in run().stderr
    project.write("zenbuild.toml", 'pipelines = ["pipe:report"]\n')
    assert "cannot import pipe" in run().stderr
    project.write("pipe.py", "import nonexistent_pkg_zz\n")
    r = run()
    assert "nonexistent_pkg_zz" in r.stderr and 'pipe.py", line 1' in r.stderr
    project.write("pipe.py", "def broken(:\n")
    assert "syntax error in pipe.py line 1" in run().stderr
    project.write("pipe.py", "x = 1\n")
    assert "no attribute 'report'" in run("pipe:report").stderr
    assert "not a pipeline" in run("pipe:x").stderr
    assert "unknown pipeline 'other'" in run("other").stderr
    assert len(results) == 9
    for res in results:
        assert "zenbuild/" not in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_no_config_at_all(tmp_path):
    from tests.conftest import zb

    r = zb("run", "--project-dir", str(tmp_path), check=2)
    assert "no pipeline given and none configured" in r.stderr


GRAPH_ERRORS = {
    "cycle": '''
@step
def a(src: File, out: Output) -> None: ...
@step
def b(src: File, out: Output) -> None: ...
@pipeline
def p():
    a(File("y"), Output("x"))
    b(File("x"), Output("y"))
''',
    "duplicate": '''
@step
def a(out: Output) -> None: ...
@pipeline
def p():
    a(Output("build/x"))
    a(Output("build/x"))
''',
    "escape": '''
@step
def a(src: File) -> None: ...
@pipeline
def p():
    a(File("../outside.txt"))
''',
    "unencodable": '''
@step
def a(x) -> None: ...
@pipeline
def p():
    a(object())
''',
}


@pytest.mark.parametrize("kind,message", [
    ("cycle", "the pipeline has a cycle: a -> b -> a"),
    ("duplicate", "both declare Output 'build/x'"),
    ("escape", "is outside the project root"),
    ("unencodable", "step a, argument x: a value of type builtins.object has no deterministic"),
])
def test_graph_errors(project, kind, message):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", "from zenbuild import step, pipeline, File, Output\n" + GRAPH_ERRORS[kind])
    r = project.run("run", check=2)
    assert message in r.stderr, r
    assert "Traceback" not in r.stderr


def test_file_edge_from_output_and_dir_input(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, File, Dir, Output
        from ticker import tick

        @step
        def summarize(data: Dir, out: Output) -> None:
            tick("summarize")
            names = sorted(p.name for p in data.glob("*.csv"))
            out.write_text(",".join(names))

        @step
        def publish(src: File) -> str:
            tick("publish")
            return src.read_text().upper()

        @pipeline
        def p():
            publish(File("build/summary.txt"))   # declared before its producer: the edge orders it
            summarize(Dir("data", glob="*.csv"), Output("build/summary.txt"))
    ''')
    project.write("data/a.csv", "1\n")
    project.write("data/notes.txt", "ignored by the glob\n")
    r = project.run("run")
    assert r.executed == ["summarize", "publish"]
    project.ticks()
    project.write("data/notes.txt", "changed, still ignored\n")
    project.run("run")
    assert project.ticks() == []
    project.write("data/b.csv", "2\n")
    r = project.run("run", "--explain")
    assert project.ticks() == ["summarize", "publish"]
    assert "file data/b.csv: new input" in r.stdout


def test_missing_input_file_fails_the_step_clearly(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, File
        @step
        def a(src: File) -> str:
            return src.read_text()
        @pipeline
        def p():
            a(File("data/missing.txt"))
    ''')
    r = project.run("run", check=1)
    assert "input file 'data/missing.txt' does not exist" in r.output


def test_a_self_looping_link_output_is_kept_as_the_link(project):
    # reading it fails with ELOOP; it was a failed step while an Output link was stored as what
    # it pointed at, and is a link like any other now (outputs.capture)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, Output
        @step
        def loop(out: Output) -> None:
            out.symlink_to(out.name)  # a symlink to itself: reading it fails with ELOOP
        @step
        def fine() -> int:
            return 1
        @pipeline
        def p():
            loop(Output("build/loop"))
            fine()
    ''')
    r = project.run("run")
    assert sorted(r.executed) == ["fine", "loop"] and "Traceback" not in r.output, r
    link = project.root / "build" / "loop"
    link.unlink()
    r = project.run("run")
    assert sorted(r.cached) == ["fine", "loop"], r
    assert os.readlink(link) == "loop"


CACHE_PIPE = '''
from zenbuild import step, pipeline
from ticker import tick

@step{step_args}
def s() -> int:
    tick("s")
    return 1

@pipeline{pipe_args}
def p():
    s()
'''


@pytest.mark.parametrize(
    "pipe_args,step_args,toml,flag,expect_exec",
    [
        ("", "", "", None, False),  # caching on by default
        ("(enable_cache=False)", "", "", None, True),  # pipeline off
        ("(enable_cache=False)", "(enable_cache=True)", "", None, False),  # step wins
        ("", "(enable_cache=False)", "", None, True),  # step off
        ("", "(enable_cache=False)", "enable_cache = true", None, False),  # config wins over step
        ("", "", "enable_cache = false", None, True),  # config off
        ("", "(enable_cache=True)", "enable_cache = true", "--no-cache", True),  # run-level wins
        ("(enable_cache=False)", "", "", "--no-cache", True),
    ],
)
def test_caching_precedence(project, pipe_args, step_args, toml, flag, expect_exec):
    conf = 'pipelines = ["pipe:p"]\n'
    if toml:
        conf += f"[steps.s]\n{toml}\n"
    project.write("zenbuild.toml", conf)
    project.write("pipe.py", CACHE_PIPE.format(pipe_args=pipe_args, step_args=step_args))
    project.run("run")
    assert project.ticks() == ["s"]
    project.run("run", *([flag] if flag else []))
    assert project.ticks() == (["s"] if expect_exec else [])


def test_run_level_enable_cache_true_overrides_pipeline_off_in_python_api(project):
    project.write("pipe.py", CACHE_PIPE.format(pipe_args="(enable_cache=False)", step_args=""))
    project.write("main.py", '''
        import sys
        from pipe import p
        r = p().run(enable_cache=(sys.argv[1] == "on"))
        print("STATUS", r.steps["s"].status)
    ''')
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    for _ in range(2):
        out = subprocess.run([sys.executable, "main.py", "on"], cwd=project.root, env=env,
                             capture_output=True, text=True, timeout=60)
    assert "STATUS cached" in out.stdout, out
    out = subprocess.run([sys.executable, "main.py", "off"], cwd=project.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "STATUS executed" in out.stdout


NO_CACHE_PIPE = '''
import os
from zenbuild import step, pipeline, no_cache, Output
from ticker import tick

@no_cache
@step
def fetch() -> str:
    tick("fetch")
    return open(os.path.join(os.path.dirname(__file__), "feed.txt")).read()

@step
def use(x: str, out: Output) -> None:
    tick("use")
    out.write_text(x.upper())

@pipeline
def p():
    use(fetch(), Output("build/out.txt"))
'''


@pytest.mark.parametrize("decorator_order", ["no_cache_outer", "no_cache_inner"])
def test_no_cache_always_executes_with_early_cutoff(project, decorator_order):
    text = NO_CACHE_PIPE
    if decorator_order == "no_cache_inner":
        text = text.replace("@no_cache\n@step", "@step\n@no_cache")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n[steps.fetch]\nenable_cache = true\n')
    project.write("pipe.py", text)
    project.write("feed.txt", "one")
    project.run("run")
    assert project.ticks() == ["fetch", "use"]
    project.run("run")
    assert project.ticks() == ["fetch"]  # same bytes: use stays cached
    project.write("feed.txt", "two")
    project.run("run")
    assert project.ticks() == ["fetch", "use"]
    assert project.read("build/out.txt") == "TWO"


def test_seed_form_pipeline_with_step_parameters(project):
    project.write("pipe.py", '''
        from zenbuild import step, pipeline
        from ticker import tick

        @step
        def load_step() -> list:
            tick("load_step")
            return [1, 2, 3]

        @step
        def train_step(data: list) -> float:
            tick("train_step")
            return sum(data) / len(data)

        @pipeline
        def first_pipeline(step_1, step_2):
            step_2(step_1())
    ''')
    project.write("main.py", '''
        from pipe import first_pipeline, load_step, train_step
        r = first_pipeline(step_1=load_step, step_2=train_step).run(enable_cache=False)
        print("VALUE", r.steps["train_step"].output, [s.status for s in r.steps.values()])
        r = first_pipeline(step_1=load_step, step_2=train_step).run()
        print("AGAIN", [s.status for s in r.steps.values()])
    ''')
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    out = subprocess.run([sys.executable, "main.py"], cwd=project.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "VALUE 2.0 ['executed', 'executed']" in out.stdout, out
    assert "AGAIN ['cached', 'cached']" in out.stdout
    assert "Step load_step has started." in out.stdout


def test_repeated_step_gets_distinct_stable_names(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline

        @step
        def inc(x: int) -> int:
            return x + 1

        @pipeline
        def p():
            inc(inc(inc(0)))
    ''')
    r = project.run("run", "--json")
    assert [s["name"] for s in json.loads(r.stdout)["steps"]] == ["inc", "inc_2", "inc_3"]


def test_python_api_result_and_shortcut(project):
    project.write("pipe.py", '''
        from zenbuild import step, pipeline

        @step
        def square(x: int) -> int:
            return x * x

        @pipeline
        def p(x: int = 3):
            square(x)
    ''')
    project.write("main.py", '''
        from pipe import p
        r = p(x=4).run()
        s = r.steps["square"]
        print("R", r.status, s.status, s.output, len(s.fingerprint), s.duration >= 0)
        r2 = p.run(x=4)
        print("R2", r2.steps["square"].status)
    ''')
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    out = subprocess.run([sys.executable, "main.py"], cwd=project.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "R succeeded executed 16 32 True" in out.stdout, out
    assert "R2 cached" in out.stdout


def test_closure_values_are_fingerprinted(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        import os
        from zenbuild import step, pipeline
        from ticker import tick

        def make(factor):
            def scaled(x: int) -> int:
                tick("scaled")
                return x * factor
            return step(scaled)

        scaled = make(int(os.environ.get("FACTOR", "2")))

        @pipeline
        def p():
            scaled(5)
    ''')
    project.run("run", env={"FACTOR": "2"})
    project.run("run", env={"FACTOR": "2"})
    assert project.ticks() == ["scaled"]
    project.run("run", env={"FACTOR": "3"})
    assert project.ticks() == ["scaled"]


def test_relative_import_helper_in_package(project):
    project.write("zenbuild.toml", 'pipelines = ["nlp.pipe:p"]\n')
    project.write("nlp/__init__.py", "")
    project.write("nlp/text.py", "def tokenize(s):\n    return s.split()\n")
    project.write("nlp/pipe.py", '''
        from zenbuild import step, pipeline
        from ticker import tick
        from .text import tokenize

        @step
        def words(s: str) -> list:
            tick("words")
            return tokenize(s)

        @step
        def other(s: str) -> str:
            tick("other")
            return s

        @pipeline
        def p():
            words("a b")
            other("x")
    ''')
    project.run("run")
    project.ticks()
    project.write("nlp/text.py", "def tokenize(s):\n    return s.split(' ')\n")
    r = project.run("run", "--explain")
    assert project.ticks() == ["words"]
    assert "code: helper nlp.text.tokenize (nlp/text.py) changed" in r.stdout


def test_third_party_package_version_is_part_of_the_fingerprint(project, tmp_path):
    site = tmp_path / "site-packages"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    meta = site / "fakepkg-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline
        from ticker import tick
        import fakepkg

        @step
        def d(x: int) -> int:
            tick("d")
            return fakepkg.double(x)

        @pipeline
        def p():
            d(2)
    ''')
    env = {"PYTHONPATH": str(site)}
    project.run("run", env=env)
    project.run("run", env=env)
    assert project.ticks() == ["d"]
    meta.rename(site / "fakepkg-1.1.dist-info")
    (site / "fakepkg-1.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.1\n")
    r = project.run("run", "--explain", env=env)
    assert project.ticks() == ["d"]
    assert "package fakepkg: 1.0 -> 1.1" in r.stdout
    # switched off in zenbuild.toml: versions no longer count
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n[fingerprint]\npackages = false\n')
    project.run("run", env=env)
    project.ticks()
    (site / "fakepkg-1.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.2\n")
    project.run("run", env=env)
    assert project.ticks() == []


def test_input_changed_while_step_runs_is_not_cached(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, File
        from ticker import tick

        @step
        def grow(src: File) -> str:
            tick("grow")
            text = src.read_text()
            src.write_text(text + "x")  # the input changes while the step runs
            return text

        @pipeline
        def p():
            grow(File("data.txt"))
    ''')
    project.write("data.txt", "a")
    r = project.run("run")
    # the step changed it itself: its own input rewritten (else: "input data.txt changed
    # while step grow ran"), used but not cached either way
    assert "step grow wrote into data.txt, which it declares as its input" in r.stderr
    project.run("run")
    assert project.ticks() == ["grow", "grow"]


def run_until_slow_step(project, env):
    """Start `zenbuild run` and return once its slow step printed SLOW-RUNNING."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zenbuild", "run", "--project-dir", str(project.root)],
        stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "SLOW-RUNNING" in line:
            break
    return proc


def test_killed_run_leaves_a_usable_store(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        import os, time
        from zenbuild import step, pipeline
        from ticker import tick

        @step
        def quick() -> str:
            tick("quick")
            time.sleep(0.3)  # longer than the group-commit interval: committed when it ends
            return "q" * 100000

        @step
        def slow(x: str) -> int:
            tick("slow")
            if os.environ.get("HANG"):
                print("SLOW-RUNNING", flush=True)
                time.sleep(60)
            return len(x)

        @pipeline
        def p():
            slow(quick())
    ''')
    env = {**os.environ, "HANG": "1", "NO_COLOR": "1"}
    proc = run_until_slow_step(project, env)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    project.ticks()
    r = project.run("run")
    assert project.ticks() == ["slow"]
    assert r.cached == ["quick"]


def test_sigterm_keeps_every_finished_step(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        import os, time
        from zenbuild import step, pipeline
        from ticker import tick

        @step
        def a() -> int:
            tick("a")
            return 1

        @step
        def b(x: int) -> int:
            tick("b")
            return x + 1

        @step
        def slow(x: int) -> int:
            tick("slow")
            if os.environ.get("HANG"):
                print("SLOW-RUNNING", flush=True)
                time.sleep(60)
            return x

        @pipeline
        def p():
            slow(b(a()))
    ''')
    env = {**os.environ, "HANG": "1", "NO_COLOR": "1"}
    proc = run_until_slow_step(project, env)
    proc.send_signal(signal.SIGTERM)  # what CI sends when a job is cancelled
    assert proc.wait(timeout=30) == 143
    assert proc.stdout is not None
    proc.stdout.close()
    project.ticks()
    r = project.run("run")
    assert r.cached == ["a", "b"]  # finished just before: committed on the way out
    assert project.ticks() == ["slow"]


def corrupt_every_blob(store: os.PathLike[str]) -> int:
    """Damage every blob of a store, in the database and under cas/; returns how many."""
    from tests.conftest import sqlite_db

    n = 0
    for dirpath, _, files in os.walk(os.path.join(store, "cas")):
        for f in files:
            with open(os.path.join(dirpath, f), "r+b") as fh:
                fh.write(b"XXXX")
            n += 1
    with sqlite_db(os.path.join(store, "zenbuild.db")) as db:
        n += db.execute("UPDATE blobs SET data = CAST(X'58585858' || data AS BLOB)").rowcount
    return n


def test_corrupt_blob_is_never_served(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline
        from ticker import tick

        @step
        def make() -> str:
            tick("make")
            return "payload" * 10

        @step
        def use(x: str, n: int) -> int:
            tick("use")
            return len(x) * n

        @pipeline
        def p(n: int = 1):
            use(make(), n)
    ''')
    project.run("run")
    project.ticks()
    assert corrupt_every_blob(project.root / ".zenbuild") >= 2
    # make is a hit, but use must load make's (corrupt) value: it is never used; the run
    # drops the entries that need it and starts again, so make executes once more
    r = project.run("run", "--param", "n=2", "--json")
    assert project.ticks() == ["make", "use"]
    assert "is corrupt" in r.stderr
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = project.run("run", "--param", "n=2")
    assert project.ticks() == []


def test_big_values_and_outputs_live_as_files_in_the_cas(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, Output

        @step
        def big(out: Output) -> bytes:
            out.write_bytes(b"o" * 200_000)
            return b"v" * 100_000

        @step
        def small(x: bytes) -> int:
            return len(x)

        @pipeline
        def p():
            small(big(Output("build/big.bin")))
    ''')
    project.run("run")
    files = [f for f in (project.root / ".zenbuild" / "cas").rglob("*") if f.is_file()]
    assert len(files) == 2  # the 100 KB value and the 200 KB output; small blobs are inline
    (project.root / "build/big.bin").unlink()
    r = project.run("run")
    assert "Restored build/big.bin from the store." in r.stdout
    assert (project.root / "build/big.bin").read_bytes() == b"o" * 200_000


def test_newer_store_format_is_refused(wc):
    from tests.conftest import sqlite_db

    with sqlite_db(wc.root / ".zenbuild" / "zenbuild.db") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    r = wc.run("run", check=2)
    assert "format version 99, newer than this zenbuild understands" in r.stderr


def test_init_writes_a_runnable_project(tmp_path):
    from tests.conftest import zb

    root = tmp_path / "fresh"
    zb("init", "--project-dir", str(root))
    r = zb("run", "--project-dir", str(root))
    assert r.executed == ["read_names", "greet", "write"]
    assert (root / "build/hello.txt").read_text() == "Hello, Ada!\nHello, Grace!\nHello, Linus!\n"
    r = zb("init", "--project-dir", str(root), check=2)
    assert "already exist" in r.stderr


def test_a_step_mutating_its_input_does_not_leak_to_siblings(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline

        @step
        def make() -> list:
            return [1, 2]

        @step
        def grab(xs: list) -> list:
            xs.append(99)  # mutates what it was given
            return xs

        @step
        def total(xs: list) -> int:
            return sum(xs)

        @pipeline
        def p():
            xs = make()
            grab(xs)
            total(xs)
    ''')
    project.write("main.py", '''
        from pipe import p
        r = p().run()
        print("TOTAL", r.steps["total"].output)
    ''')
    env = {**os.environ, "PYTHONPATH": str(project.root)}
    out = subprocess.run([sys.executable, "main.py"], cwd=project.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "TOTAL 3" in out.stdout, out


def test_an_older_store_schema_is_migrated_in_place(wc):
    from tests.conftest import sqlite_db

    with sqlite_db(wc.root / ".zenbuild" / "zenbuild.db") as db:
        db.execute("DROP TABLE source_cache")  # what a version-1 store lacked
        db.execute("ALTER TABLE runs DROP COLUMN steps")  # what a version-3 store lacked
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    r = wc.run("run")
    assert r.cached == ["load", "count", "keep", "render"]  # entries survive the migration
    assert wc.run("runs").stdout.count("succeeded") == 2  # so does the history
    shown = wc.run("runs", "show", "last")
    assert "load" in shown.stdout and "cached" in shown.stdout
    with sqlite_db(wc.root / ".zenbuild" / "zenbuild.db") as db:
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    from zenbuild.store.db import SCHEMA_VERSION

    assert version == str(SCHEMA_VERSION)


def test_folder_output_is_exactly_what_the_cached_run_made(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, Output, Dir
        from ticker import tick

        @step
        def models(n: int, out: Output) -> None:
            tick("models")
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (out / f"m{i}.txt").write_text(f"model {i}")

        @step
        def summary(d: Dir, out: Output) -> None:
            tick("summary")
            out.write_text(",".join(sorted(p.name for p in d.iterdir())))

        @pipeline
        def p(n: int = 2):
            models(n, Output("build/models"))
            summary(Dir("build/models"), Output("build/summary.txt"))
    ''')
    project.run("run")
    project.run("run", "--param", "n=3")  # m2.txt appears
    project.ticks()
    r = project.run("run")  # n=2 again: served from the store, and m2.txt must go
    assert project.ticks() == []
    assert sorted(p.name for p in (project.root / "build/models").iterdir()) == ["m0.txt", "m1.txt"]
    assert project.read("build/summary.txt") == "m0.txt,m1.txt"
    assert r.cached == ["models", "summary"]
    (project.root / "build/models/m1.txt").unlink()
    (project.root / "build/models/stray.txt").write_text("left by hand")
    project.run("run")
    assert project.ticks() == []
    assert sorted(p.name for p in (project.root / "build/models").iterdir()) == ["m0.txt", "m1.txt"]


def test_an_interrupted_run_is_recorded_as_interrupted(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        import time
        from zenbuild import step, pipeline

        @step
        def slow() -> int:
            print("SLOW-RUNNING", flush=True)
            time.sleep(60)
            return 1

        @pipeline
        def p():
            slow()
    ''')
    proc = run_until_slow_step(project, {**os.environ, "NO_COLOR": "1"})
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stdout is not None
    proc.stdout.close()
    r = project.run("runs", "--json")
    runs = json.loads(r.stdout)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    assert runs[0]["status"] == "interrupted"


def test_a_corrupt_file_of_a_folder_output_is_made_again_and_said_so(project):
    """No cache entry names a folder Output's file blob itself (the entry names the folder's
    manifest): the warning said it removed "the 0 cache entries that used it"."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        from zenbuild import step, pipeline, Output
        from ticker import tick

        @step
        def folder(out: Output) -> None:
            tick("folder")
            out.mkdir(parents=True, exist_ok=True)
            (out / "x.bin").write_bytes(b"x" * 200_000)

        @pipeline
        def p():
            folder(Output("build/d"))
    ''')
    project.run("run")
    assert project.ticks() == ["folder"]
    cas = project.root / ".zenbuild" / "cas"
    blob = next(f for sub in cas.iterdir() for f in sub.iterdir() if f.stat().st_size == 200_000)
    data = bytearray(blob.read_bytes())
    data[7] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    shutil.rmtree(project.root / "build" / "d")
    r = project.run("run")
    assert "is corrupt" in r.stderr and "a file of a folder Output" in r.stderr
    assert "0 cache entries" not in r.stderr
    assert project.ticks() == ["folder"]
    assert (project.root / "build" / "d" / "x.bin").read_bytes() == b"x" * 200_000


@pytest.mark.parametrize("exc", ["SystemExit(3)", "GeneratorExit('stop')"])
@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "workers"])
def test_a_step_raising_a_base_exception_is_a_failed_step(project, exc, jobs):
    """GeneratorExit raised by a step showed zenbuild's traceback, printed no --json and
    recorded the run as interrupted; like SystemExit, it is the step's failure."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", f'''
        from zenbuild import step, pipeline
        @step
        def s() -> int:
            raise {exc}
        @step
        def t() -> int:
            return 1
        @pipeline
        def p():
            s()
            t()
    ''')
    r = project.run("run", "--json", "-k", *jobs, check=1)
    data = json.loads(r.stdout)
    assert data["status"] == "failed", r
    failed = {s["name"]: s for s in data["steps"]}["s"]
    assert failed["error"]["type"] == exc.split("(")[0], r
    assert "zenbuild/" not in failed["error"]["traceback"] and "pipe.py" in failed["error"]["traceback"]
