"""End-to-end: the Outputs of a call the pipeline no longer makes (a fan-out that shrank, a
renamed call), or that a call no longer declares, are removed before the steps run, so an
incremental run leaves what a clean run would; the user's edits of them go to the trash, and
a path another call (or another pipeline) declares, or a dry run, keeps them."""

from __future__ import annotations

import shutil
from typing import List

import pytest
from conftest import Project, sqlite_db

PIPE = '''
import os
from zenbuild import Dir, Output, pipeline, step


@step
def part(name: str, o: Output) -> None:
    o.write_text(name)


@step
def merge(parts: Dir, o: Output) -> None:
    o.write_text(repr(sorted(os.listdir(parts))))


@pipeline
def p(names: list = NAMES):
    for n in names:
        part(n, Output(f"build/parts/{n}.txt"))
    merge(Dir("build/parts"), Output("build/out.txt"))
'''


def pipe(names: List[str], ids: bool = False) -> str:
    text = PIPE.replace("NAMES", repr(names))
    if ids:  # every call named by itself, as in ZenML
        text = text.replace('Output(f"build/parts/{n}.txt"))',
                            'Output(f"build/parts/{n}.txt"), id=f"part_{n}")')
    return text


def setup(project: Project, names: List[str], ids: bool = False, *args: str) -> None:
    project.write("pipe.py", pipe(names, ids))
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run", *args)


def parts(project: Project) -> List[str]:
    return sorted(p.name for p in (project.root / "build" / "parts").iterdir())


def states(project: Project, pipeline: str = "p") -> List[str]:
    with sqlite_db(project.root / ".zenbuild" / "zenbuild.db") as db:
        return sorted(r[0] for r in db.execute(
            "SELECT step FROM step_state WHERE pipeline = ?", (pipeline,)))


def clean_result(project: Project) -> str:
    """What a clean run of the project as it is now leaves in build/out.txt."""
    shutil.rmtree(project.root / ".zenbuild")
    shutil.rmtree(project.root / "build")
    project.run("run")
    return project.read("build/out.txt")


@pytest.mark.parametrize("jobs", [[], ["-j", "2"]], ids=["serial", "j2"])
def test_a_fanout_that_shrank_gives_the_clean_result(project: Project, jobs: List[str]) -> None:
    setup(project, ["a", "b"], False, *jobs)
    assert project.read("build/out.txt") == "['a.txt', 'b.txt']"
    project.write("pipe.py", pipe(["a"]))
    r = project.run("run", *jobs)
    assert ("Removed build/parts/b.txt: an output of part_2, which is no longer in pipeline p."
            in r.stdout)
    assert parts(project) == ["a.txt"]
    assert r.executed == ["merge"] and r.cached == ["part"]
    assert project.read("build/out.txt") == "['a.txt']"
    assert states(project) == ["merge", "part"]  # part_2's latest entry is forgotten
    again = project.run("run", *jobs)
    assert again.executed == [] and "Removed" not in again.output
    # the call comes back: served from its entry, its output restored
    project.write("pipe.py", pipe(["a", "b"]))
    back = project.run("run", *jobs)
    assert "part_2" in back.cached and parts(project) == ["a.txt", "b.txt"]
    assert project.read("build/out.txt") == "['a.txt', 'b.txt']"
    project.write("pipe.py", pipe(["a"]))
    project.run("run", *jobs)
    assert project.read("build/out.txt") == clean_result(project) == "['a.txt']"


def test_a_leftover_the_user_edited_goes_to_the_trash(project: Project) -> None:
    setup(project, ["a", "b"])
    (project.root / "build/parts/b.txt").write_text("my notes")
    project.write("pipe.py", pipe(["a"]))
    r = project.run("run")
    assert "moved your version of build/parts/b.txt to" in r.stderr
    assert "before removing it (an output of part_2, which is no longer in pipeline p)" in r.stderr
    assert "Removed build/parts/b.txt" not in r.output  # one line per path: the trash's
    kept = list((project.root / ".zenbuild" / "trash").glob("*/build/parts/b.txt"))
    assert [k.read_text() for k in kept] == ["my notes"]
    assert parts(project) == ["a.txt"]
    assert project.read("build/out.txt") == "['a.txt']"


def test_a_path_another_call_declares_is_kept(project: Project) -> None:
    # every call renamed by id=: the old names vanish, the new ones declare the same Outputs
    # (kept, served); the call that is gone for good loses its file
    setup(project, ["a", "b", "c"])
    project.write("pipe.py", pipe(["a", "b"], ids=True))
    r = project.run("run")
    assert "Removed build/parts/c.txt: an output of part_3" in r.stdout
    assert "build/parts/a.txt" not in r.output and "build/parts/b.txt" not in r.output
    assert sorted(r.cached) == ["part_a", "part_b"] and r.executed == ["merge"]
    assert parts(project) == ["a.txt", "b.txt"]
    assert project.read("build/parts/a.txt") == "a"
    assert states(project) == ["merge", "part_a", "part_b"]
    # the same call with another Output: its old one goes, unless another call declares it
    project.write("pipe.py", pipe(["a", "b"]))
    project.run("run")
    project.write("pipe.py", pipe(["b", "a"]))  # swapped: each path declared by the other call
    r = project.run("run")
    assert "Removed" not in r.output and parts(project) == ["a.txt", "b.txt"]
    project.write("pipe.py", pipe(["a", "b"]))
    project.run("run")
    project.write("pipe.py", pipe(["b"]))  # part now writes b.txt (part_2's); a.txt: nobody
    r = project.run("run")
    assert ("Removed build/parts/a.txt: an earlier output of part, which no longer declares it."
            in r.stdout)
    assert "build/parts/b.txt" not in r.stdout
    assert parts(project) == ["b.txt"] and project.read("build/parts/b.txt") == "b"
    assert project.read("build/out.txt") == clean_result(project) == "['b.txt']"


def test_a_path_another_pipeline_declares_is_kept(project: Project) -> None:
    project.write("pipe.py", pipe(["a", "b", "c"]) + '''

@pipeline
def q():
    part("b", Output("build/parts/b.txt"))
''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:p", "pipe:q"]\n')
    project.run("run", "p")
    project.run("run", "q")
    project.write("pipe.py", project.read("pipe.py").replace(repr(["a", "b", "c"]), repr(["a"])))
    r = project.run("run", "p")
    assert "Removed build/parts/c.txt: an output of part_3" in r.stdout
    assert "build/parts/b.txt" not in r.output  # q's latest entry claims it
    assert parts(project) == ["a.txt", "b.txt"]
    assert states(project, "q") == ["part"]


def test_a_dry_run_removes_nothing(project: Project) -> None:
    setup(project, ["a", "b"])
    project.write("pipe.py", pipe(["a"]))
    dry = project.run("run", "--dry-run")
    assert ("A run would remove build/parts/b.txt: an output of part_2, which is no longer in "
            "pipeline p." in dry.stdout)
    assert "Would execute merge" in dry.stdout  # judged on what the run would leave
    status = project.run("status", "--check", check=1)
    assert "merge" in status.stdout and "stale" in status.stdout
    project.run("explain", "merge")
    assert parts(project) == ["a.txt", "b.txt"]
    assert states(project) == ["merge", "part", "part_2"]
    assert not (project.root / ".zenbuild" / "trash").exists()
    (project.root / "build/parts/b.txt").write_text("mine")
    dry = project.run("run", "--dry-run")
    assert "A run would move your version of build/parts/b.txt to the trash" in dry.stdout
    assert project.read("build/parts/b.txt") == "mine"
    r = project.run("run")
    assert r.executed == ["merge"] and project.read("build/out.txt") == "['a.txt']"


FOLDERS = '''
import os
from zenbuild import Dir, Output, pipeline, step


@step
def part(name: str, o: Output) -> None:
    os.makedirs(o / "sub")
    (o / "sub" / "x.txt").write_text(name)


@step
def merge(parts: Dir, o: Output) -> None:
    o.write_text(repr(sorted(os.listdir(parts))))


@pipeline
def p(names: list = NAMES):
    for n in names:
        part(n, Output(f"build/parts/{n}/d"))
    merge(Dir("build/parts"), Output("build/out.txt"))
'''


def test_a_folder_output_of_a_vanished_call_is_removed(project: Project) -> None:
    project.write("pipe.py", FOLDERS.replace("NAMES", '["a", "b", "c"]'))
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")
    shutil.rmtree(project.root / "build/parts/c/d")  # deleted by the user: nothing to say
    project.write("pipe.py", FOLDERS.replace("NAMES", '["a"]'))
    r = project.run("run")
    assert "Removed build/parts/b/d: an output of part_2" in r.stdout
    assert "build/parts/c" not in r.output
    # b/ held only b/d: a clean run has no b/ (c/, emptied by the user, is the user's)
    assert parts(project) == ["a", "c"]
    assert project.read("build/out.txt") == "['a', 'c']"
    shutil.rmtree(project.root / "build/parts/c")
    project.run("run")
    assert project.read("build/out.txt") == clean_result(project) == "['a']"


KEPT = '''
from zenbuild import Dir, File, Output, pipeline, step


@step
def gen(o: Output) -> None:
    o.write_text('{"lr": 1}')


@step
def download(o: Output) -> None:
    o.mkdir(parents=True, exist_ok=True)
    (o / "jan.csv").write_text("1\\n")


@step
def train(cfg: File, raw: Dir) -> str:
    return cfg.read_text() + ",".join(sorted(p.name for p in raw.iterdir()))


@pipeline
def p():
    gen(Output("data/config.json"))
    download(Output("data/raw"))
    train(File("data/config.json"), Dir("data/raw"))
'''


def test_a_leftover_the_pipeline_now_reads_as_an_input_is_kept(project: Project) -> None:
    """The user removes the steps that made data/config.json and data/raw, keeps the files,
    and reads them as inputs: they were deleted (the folder, with the user's added file, went
    to the trash) and the step failed on a missing input."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", KEPT)
    project.run("run")
    project.write("data/raw/feb.csv", "2\n")
    project.write("pipe.py", KEPT.replace('    gen(Output("data/config.json"))\n', "")
                  .replace('    download(Output("data/raw"))\n', ""))
    r = project.run("run")
    assert "Removed" not in r.output and "trash" not in r.output, r
    assert project.read("data/config.json") == '{"lr": 1}'
    assert sorted(p.name for p in (project.root / "data" / "raw").iterdir()) == [
        "feb.csv", "jan.csv"]
    assert r.executed == ["train"], r
