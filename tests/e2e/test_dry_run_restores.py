"""End-to-end: status, explain and run --dry-run judge a step by what a real run would show it
after restoring the Outputs it reads (tester round r6: after `rm -rf build`, a step reading a
restored folder through a Dir, a listing or an undeclared open() was said to execute, while
the real run restored the folder and served every step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest
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


LINKS = """
import glob
import os
from zenbuild import File, Output, pipeline, step

HERE = os.path.dirname(os.path.abspath(__file__))

@step
def mk(out: Output) -> int:
    os.symlink("../data/real.txt", out)  # a link Output
    return 1

@step
def rd(src: File) -> str:
    return src.read_text()

@step
def folder(out: Output) -> int:
    out.mkdir(parents=True)
    (out / "own.txt").write_text("x")
    os.symlink("../../config.txt", out / "cfg")  # leads out of the folder
    return 2

@step
def cfg(first: int) -> str:
    with open(os.path.join(HERE, "build/d/cfg")) as f:
        return f.read()

@step
def gen(out: Output) -> int:
    out.mkdir(parents=True)
    (out / "g.txt").write_text("g")
    return 3

@step
def pat(first: int) -> list:
    return sorted(glob.glob(os.path.join(HERE, "data/*/*.txt")))

@pipeline
def p():
    mk(Output("build/l"))
    rd(File("build/l"))  # after mk: it reads mk's Output
    cfg(folder(Output("build/d")))
    pat(gen(Output("data/gen")))
"""
STEPS = ["cfg", "folder", "gen", "mk", "pat", "rd"]


def _links(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("data/real.txt", "hi\n")
    project.write("config.txt", "v1\n")
    project.write("raw/r.txt", "r\n")
    os.symlink("../raw", project.root / "data" / "cur")  # the pattern goes through it
    project.write("pipe.py", LINKS)
    r = project.run("run")
    assert sorted(r.executed) == STEPS, r


def _would(project: Project) -> List[str]:
    dry = project.run("run", "--dry-run")
    assert "failed" not in dry.output, dry
    return sorted(ln.split()[2].rstrip(":") for ln in dry.output.splitlines()
                  if ln.startswith("Would execute"))


def test_a_dry_run_reads_through_the_links_the_run_would_restore(project: Project) -> None:
    # a link Output, a link in a folder Output leading out of it, and a pattern through a
    # link on disk into a restored folder were judged missing: "failed" / "would execute"
    import shutil

    _links(project)
    shutil.rmtree(project.root / "build")
    shutil.rmtree(project.root / "data" / "gen")
    assert _would(project) == []
    assert "up to date" in project.run("explain", "pat").stdout
    project.write("config.txt", "v2\n")  # what the restored link leads to: seen
    project.write("raw/new.txt", "n\n")  # what the pattern finds through data/cur: seen
    project.write("data/real.txt", "changed\n")
    assert _would(project) == ["cfg", "pat", "rd"]
    assert not (project.root / "build").exists()  # the dry runs wrote nothing
    r = project.run("run")
    assert sorted(r.executed) == ["cfg", "pat", "rd"], r


def test_a_dry_run_reads_a_link_still_on_disk_in_a_folder_it_would_restore(
        project: Project) -> None:
    # one file of the folder gone, its link still there: the link was judged gone
    _links(project)
    (project.root / "build" / "d" / "own.txt").unlink()
    assert _would(project) == []
    project.write("config.txt", "v2\n")
    assert _would(project) == ["cfg"]


def test_a_dry_run_sees_an_output_restored_through_a_folder_link(project: Project) -> None:
    # Output("data/cur/x.txt") with data/cur -> ../raw: the restore writes raw/x.txt, which a
    # listing of data/cur then shows; the dry run crashed, then said "would execute"
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    (project.root / "raw").mkdir()
    (project.root / "data").mkdir()
    os.symlink("../raw", project.root / "data" / "cur")
    project.write("pipe.py", """
        import os
        from zenbuild import Output, pipeline, step

        HERE = os.path.dirname(os.path.abspath(__file__))

        @step
        def s0(out: Output) -> int:
            out.write_text("zero")
            return 0

        @step
        def top(x: int) -> list:
            return sorted(os.listdir(os.path.join(HERE, "data")))

        @step
        def s1(x: list, out: Output) -> int:
            out.write_text("one")
            return 1

        @step
        def cur(x: int) -> list:
            return sorted(os.listdir(os.path.join(HERE, "data/cur")))

        @pipeline
        def p():
            cur(s1(top(s0(Output("data/o.txt"))), Output("data/cur/x.txt")))
    """)
    assert sorted(project.run("run").executed) == ["cur", "s0", "s1", "top"]
    (project.root / "data" / "o.txt").unlink()
    (project.root / "raw" / "x.txt").unlink()
    assert _would(project) == []
    (project.root / "raw" / "y.txt").write_text("new")  # beside it, on disk: seen
    assert _would(project) == ["cur"]
    r = project.run("run")
    assert r.executed == ["cur"] and (project.root / "raw" / "x.txt").read_text() == "one", r


def test_a_dir_holding_links_to_restored_outputs_is_judged_after_the_restore(
        project: Project) -> None:
    # data/latest.csv -> ../build/out/r.csv, dangling after rm -rf build: left out of the
    # Dir's listing, so the dry run said "would execute"; a link to a folder Output replaced
    # by a file made it say the step failed
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import Dir, Output, pipeline, step

        @step
        def gen(out: Output) -> int:
            (out / "sub").mkdir(parents=True)
            (out / "r.csv").write_text("1,2\\n")
            (out / "sub" / "s.txt").write_text("s")
            return 1

        @step
        def use(x: int, d: Dir) -> list:
            return sorted(p.name for p in d.iterdir())

        @pipeline
        def p():
            use(gen(Output("build/out")), Dir("data"))
    """)
    project.write("data/own.txt", "own\n")
    os.symlink("../build/out/r.csv", project.root / "data" / "latest.csv")
    os.symlink("../build/out/sub", project.root / "data" / "cursub")
    assert sorted(project.run("run").executed) == ["gen", "use"]
    import shutil

    shutil.rmtree(project.root / "build")
    assert _would(project) == []
    project.run("run")
    shutil.rmtree(project.root / "build" / "out" / "sub")
    (project.root / "build" / "out" / "sub").write_text("x")
    assert _would(project) == []
    r = project.run("run")
    assert r.executed == [] and sorted(r.cached) == ["gen", "use"], r


def test_an_empty_folder_output_comes_back_a_folder_s_mode(project: Project) -> None:
    # restored 0700 (made so for the restore, never given its mode): a Dir over it then
    # executed again after rm -rf build, and the dry run said so too
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import Dir, Output, pipeline, step

        @step
        def emp(out: Output) -> int:
            out.mkdir(parents=True)
            return 1

        @step
        def dr(x: int, d: Dir) -> int:
            return 2

        @pipeline
        def p():
            dr(emp(Output("build/e")), Dir("build"))
    """)
    assert sorted(project.run("run").executed) == ["dr", "emp"]
    import shutil

    mode = (project.root / "build" / "e").stat().st_mode & 0o777
    shutil.rmtree(project.root / "build")
    assert _would(project) == []
    r = project.run("run")
    assert r.executed == [] and (project.root / "build" / "e").stat().st_mode & 0o777 == mode, r


def test_a_dangling_link_above_the_outputs_is_said_not_a_traceback(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import Output, pipeline, step

        @step
        def gen(out: Output) -> int:
            (out / "sub").mkdir(parents=True)
            (out / "sub" / "a.txt").write_text("a")
            return 1

        @pipeline
        def p():
            gen(Output("build/d"))
    """)
    project.run("run")
    import shutil

    shutil.rmtree(project.root / "build")
    os.symlink("nowhere", project.root / "build")  # a scratch disk not mounted
    for cmd in (["run"], ["run", "--dry-run"], ["status"]):  # the dry run said "restore"
        r = project.run(*cmd, check=2)
        assert "'build' is a symbolic link to 'nowhere', which does not exist" in r.stderr, r
        assert "Traceback" not in r.output and os.readlink(project.root / "build") == "nowhere"


def test_a_folder_made_on_the_way_during_a_restore_is_said_not_a_traceback(
        tmp_path: Path) -> None:
    # (what the placement check cannot see coming: the folder's path taken meanwhile)
    from zenbuild.digest import StatCache
    from zenbuild.errors import StoreError
    from zenbuild.store.db import Store
    from zenbuild.store.restoring import restore

    store = Store(str(tmp_path / "store"))
    digest = store.put_blob(b"x")
    os.symlink("nowhere", tmp_path / "build")
    with pytest.raises(StoreError, match="cannot make folder .*build/d.* on the way"):
        restore(str(tmp_path), [("build/d/a.txt", digest, 0o644, "build/d")], store, StatCache())
    store.close()


def test_a_dry_run_pretends_only_what_the_restore_plan_does(project: Project) -> None:
    # one file deleted from a 30,000-file folder Output: every file of the manifest was
    # pretended and written into the mirror (17.6 s against 0.65 s for the real run)
    from zenbuild.digest import StatCache
    from zenbuild.serve import Server
    from zenbuild.store.db import Store

    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import Output, pipeline, step

        @step
        def gen(out: Output) -> int:
            out.mkdir(parents=True)
            for i in range(200):
                (out / f"f{i}.txt").write_text(str(i))
            return 1

        @pipeline
        def p():
            gen(Output("build/d"))
    """)
    project.run("run")
    (project.root / "build" / "d" / "f7.txt").unlink()
    (project.root / "build" / "d" / "mine.txt").write_text("a file the restore removes")
    store = Store(str(project.root / ".zenbuild"), create=False)
    try:
        entries = store.step_states("p") or store.step_states("pipe:p")
        entry = entries["gen"]
        server = Server(str(project.root), store, StatCache(), dry_run=True)
        assert server.usable(entry) is None
        server.serve(entry)
        assert sorted(server.overlay.ops) == [("file", "build/d/f7.txt", ""),
                                              ("remove", "build/d/mine.txt", "")]
        assert server.overlay.where(str(project.root), "build/d/f8.txt") == (None, "build/d/f8.txt")
    finally:
        store.close()
