"""End-to-end: status, explain and run --dry-run judge a step by what a real run would show it
after restoring the Outputs it reads (tester round r6: after `rm -rf build`, a step reading a
restored folder through a Dir, a listing or an undeclared open() was said to execute, while
the real run restored the folder and served every step)."""

from __future__ import annotations

from conftest import Project

PIPE = """
import os
from zenbuild import Dir, Output, pipeline, step

HERE = os.path.dirname(os.path.abspath(__file__))

@step
def gen(out: Output) -> int:
    out.mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "sub").mkdir()
    (out / "sub" / "b.txt").write_text("b")
    (out / "empty").mkdir()
    os.symlink("a.txt", out / "link")
    return 1

@step
def count(d: Dir) -> int:
    return len(list(d.rglob("*")))

@step
def names(first: int) -> list:
    return sorted(os.listdir(os.path.join(HERE, "build/out"))) + sorted(
        os.listdir(os.path.join(HERE, "data")))

@step
def peek(first: int) -> str:
    with open(os.path.join(HERE, "build/out/sub/b.txt")) as f:
        return f.read()

@pipeline
def p():
    g = gen(Output("build/out"))
    count(Dir("build/out"))
    names(g)
    peek(g)
"""


def _setup(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("data/x.txt", "x\n")
    project.write("pipe.py", PIPE)
    r = project.run("run")
    assert sorted(r.executed) == ["count", "gen", "names", "peek"], r


def test_after_the_folder_output_is_deleted_the_dry_run_says_what_the_run_does(
        project: Project) -> None:
    import shutil

    _setup(project)
    shutil.rmtree(project.root / "build")
    st = project.run("status", check=None)
    assert "gen" in st.stdout and "restore" in st.stdout, st
    for step in ("count", "names", "peek"):
        line = next(ln for ln in st.stdout.splitlines() if ln.split()[:1] == [step])
        assert "up to date" in line, st
    dry = project.run("run", "--dry-run")
    assert "Would execute" not in dry.output, dry
    assert "up to date" in project.run("explain", "count").stdout
    assert not (project.root / "build").exists()  # the dry runs wrote nothing
    r = project.run("run")
    assert r.executed == [] and sorted(r.cached) == ["count", "gen", "names", "peek"], r


def test_a_real_change_beside_the_restored_folder_is_still_seen(project: Project) -> None:
    import shutil

    _setup(project)
    shutil.rmtree(project.root / "build")
    project.write("data/y.txt", "y\n")  # names() lists data/: it must execute
    dry = project.run("run", "--dry-run")
    assert "Would execute names" in dry.output, dry
    for step in ("count", "peek"):
        assert f"Would execute {step}" not in dry.output, dry
    r = project.run("run")
    assert r.executed == ["names"], r
