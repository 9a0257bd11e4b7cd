"""End-to-end: restoring a folder Output of many files names a few of them and counts the
rest (it printed a line per file: 300 lines for a 300-file folder); -v names them all."""

from __future__ import annotations

import shutil

from conftest import Project

PIPE = '''
from zenbuild import Output, pipeline, step


@step
def parts(out: Output, n: int) -> int:
    out.mkdir()
    for i in range(n):
        (out / f"f{i:03d}.txt").write_text(str(i))
    return n


@pipeline
def p(n: int = 40):
    parts(Output("build/parts"), n)
'''


def test_a_big_folder_restore_is_summed_up(project: Project) -> None:
    project.write("pipe.py", PIPE)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    shutil.rmtree(project.root / "build" / "parts")
    r = project.run("run")
    assert r.executed == [] and len(list((project.root / "build/parts").iterdir())) == 40
    lines = [x for x in r.stdout.splitlines() if x.startswith("Restored")]
    assert lines[:5] == [f"Restored build/parts/f{i:03d}.txt from the store." for i in range(5)]
    assert lines[5:] == ["Restored 35 more files from the store (-v lists them)."]
    shutil.rmtree(project.root / "build" / "parts")
    r = project.run("run", "-v")
    assert sum(x.startswith("Restored build/parts/") for x in r.stdout.splitlines()) == 40
    # a few files are still listed one by one
    for name in ("f001.txt", "f002.txt"):
        (project.root / "build" / "parts" / name).unlink()
    r = project.run("run")
    assert [x for x in r.stdout.splitlines() if x.startswith("Restored")] == [
        "Restored build/parts/f001.txt from the store.",
        "Restored build/parts/f002.txt from the store."]


def test_a_dry_run_says_what_a_run_would_put_back(project: Project) -> None:
    project.write("pipe.py", PIPE.replace("n: int = 40", "n: int = 3"))
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    (project.root / "build" / "parts" / "f001.txt").unlink()
    (project.root / "build" / "parts" / "stray.txt").write_text("mine")
    r = project.run("run", "--dry-run")
    assert "A run would restore build/parts/f001.txt from the store." in r.stdout
    assert "A run would remove build/parts/stray.txt (the step did not make it)." in r.stdout
    assert "Using cached version of parts." in r.stdout
    assert not (project.root / "build" / "parts" / "f001.txt").exists()  # a dry run: nothing done
    r = project.run("run", "--dry-run")  # still nothing done, still said
    assert "A run would restore build/parts/f001.txt from the store." in r.stdout


def test_status_check_says_a_restore_is_a_restore(project: Project) -> None:
    project.write("pipe.py", PIPE.replace("n: int = 40", "n: int = 3"))
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    assert project.run("status", "--check").returncode == 0
    (project.root / "build" / "parts" / "f001.txt").unlink()
    r = project.run("status", "--check", check=1)
    assert "have outputs on disk that differ from their cached results: parts" in r.output
    assert "to restore them (nothing executes)" in r.output and "rebuild" not in r.output
    project.run("run")
    assert project.run("status", "--check").returncode == 0
