"""End-to-end: files a step (or a child process it starts) creates are its writes, not inputs
that changed while it ran; a file it read and then changed in place is its own input
rewritten, which cannot be cached (its result depends on what an earlier run left there)."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import Project

pytestmark = pytest.mark.skipif(shutil.which("sort") is None or shutil.which("sed") is None,
                                reason="sort and sed")

MADE = '''
import os
import subprocess

from zenbuild import Output, pipeline, step
from ticker import tick


@step
def declared(out: Output) -> str:
    tick("declared")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sort", "-o", str(out), "data/in.txt"], check=True)
    return out.read_text()


@step
def undeclared() -> str:
    tick("undeclared")
    os.makedirs("build", exist_ok=True)
    subprocess.run(["sort", "-o", "build/u.txt", "data/in.txt"], check=True)
    with open("build/u.txt") as f:  # read back what the child made
        return f.read()


@step
def redirected() -> str:
    tick("redirected")
    os.makedirs("build", exist_ok=True)
    subprocess.run("sort data/in.txt >build/r.txt", shell=True, check=True)
    with open("build/r.txt") as f:
        return f.read()


@step
def logged() -> str:
    tick("logged")
    with open("data/in.txt") as f:
        text = f.read()
    with open("run.log", "a") as f:  # appending to a log is no rewrite of an input
        f.write("ran\\n")
    return text


@step
def show(a: str, b: str, c: str, d: str) -> None:
    print("VALUES", repr(a), repr(b), repr(c), repr(d))


@pipeline
def p():
    show(declared(Output("build/d.txt")), undeclared(), redirected(), logged())
'''


def test_files_a_child_makes_are_its_writes_and_the_step_caches(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", MADE)
    project.write("data/in.txt", "b\na\n")
    project.write("run.log", "")
    r = project.cli("run")
    assert sorted(project.ticks()) == ["declared", "logged", "redirected", "undeclared"], r
    assert "changed while step" not in r.output and "not cached" not in r.output, r
    assert "VALUES 'a\\nb\\n' 'a\\nb\\n' 'a\\nb\\n' 'b\\na\\n'" in r.output, r
    r = project.cli("run")
    assert project.ticks() == [], r  # a cache hit for each, the first run was cached
    project.write("data/in.txt", "c\nb\na\n")  # the input: every step reruns
    r = project.cli("run")
    assert sorted(project.ticks()) == ["declared", "logged", "redirected", "undeclared"], r
    assert "not cached" not in r.output, r  # build/u.txt existed now: still the child's write
    assert "VALUES 'a\\nb\\nc\\n' 'a\\nb\\nc\\n' 'a\\nb\\nc\\n'" in r.output, r
    r = project.cli("run")
    assert project.ticks() == [], r


REWRITES = '''
import subprocess

from zenbuild import File, pipeline, step
from ticker import tick


@step
def sed_i() -> int:
    tick("sed_i")
    subprocess.run(["sed", "-i", "s/a/A/", "data/f.txt"], check=True)
    return 1


@step
def r_plus() -> str:
    tick("r_plus")
    with open("data/g.txt", "r+") as f:
        text = f.read()
        f.seek(0)
        f.write(text.upper())
    return text


@step
def read_then_write() -> str:
    tick("read_then_write")
    with open("data/h.txt") as f:
        text = f.read()
    with open("data/h.txt", "w") as f:
        f.write(text + "x")
    return text


@step
def own_input(src: File) -> str:
    tick("own_input")
    text = src.read_text()
    src.write_text(text + "y")
    return text


@pipeline
def p():
    sed_i()
    r_plus()
    read_then_write()
    own_input(File("data/k.txt"))
'''


def test_a_step_that_rewrites_its_input_is_never_served_from_cache(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", REWRITES)
    for name in "fghk":
        project.write(f"data/{name}.txt", "abc\n")
    steps = ["own_input", "r_plus", "read_then_write", "sed_i"]
    for _ in range(2):
        r = project.cli("run")
        assert sorted(project.ticks()) == steps, r
        assert r.cached == [], r
        for step, rel in [("sed_i", "data/f.txt"), ("r_plus", "data/g.txt"),
                          ("read_then_write", "data/h.txt")]:
            assert f"Warning: step {step} rewrote {rel} in place" in r.output, r
            assert "used but not cached" in r.output and "@no_cache" in r.output, r
        # a declared File: it may be another step's Output, so "declare it as an Output" is
        # not the advice
        assert ("Warning: step own_input wrote into data/k.txt, which it declares as its "
                'input (File("data/k.txt")): a step must not change its inputs') in r.output, r
        # the rewritten file is the step's input, not an undeclared output of it
        assert "will not be restored" not in r.output, r
    r = project.cli("explain", "sed_i")
    assert "its last run was not cached: step sed_i rewrote data/f.txt in place" in r.stdout, r
    got = json.loads(project.cli("explain", "r_plus", "--json").stdout)["last_run_not_cached"]
    assert (got["kind"], got["subject"]) == ("input_rewritten", "data/g.txt"), got
    project.write("data/f.txt", "a user edit\n")
    r = project.cli("run")
    assert "sed_i" in project.ticks(), r
    assert project.read("data/f.txt") == "A user edit\n"


FLAG = '''
import subprocess
import sys

from zenbuild import pipeline, step
from ticker import tick


@step
def optimized() -> str:
    tick("optimized")
    # -O is python's optimize flag here, not an output option: tool.py is the script it runs
    done = subprocess.run([sys.executable, "-O", "tool.py"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pipeline
def p():
    optimized()
'''


def test_a_file_after_an_output_option_that_the_child_leaves_alone_is_a_read(
        project: Project) -> None:
    """`-O`/`-o` name a command's output for many tools but not for all (`python -O
    script.py`): a file so named that the child does not change is a read, so editing the
    script reruns the step."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", FLAG)
    project.write("tool.py", "print('one')\n")
    project.cli("run")
    assert project.ticks() == ["optimized"]
    project.cli("run")
    assert project.ticks() == []
    project.write("tool.py", "print('two')\n")
    project.cli("run")
    assert project.ticks() == ["optimized"]
