"""End-to-end: a hand edit of an Output goes to the trash whether its step is served or
executes, and a symlink at an Output (or inside an Output folder) is replaced, never written,
cleared or restored through: nothing outside the project is touched."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import Project

from zenbuild.digest import StatCache
from zenbuild.store.db import Store
from zenbuild.store.outputs import Trash, Unstored

PIPE = '''
from zenbuild import Output, pipeline, step


@step
def w(out: Output) -> None:
    out.write_text("v1\\n")


@step
def wdir(out: Output) -> None:
    out.mkdir()
    (out / "a.txt").write_text("v1\\n")
    (out / "sub").mkdir()
    (out / "sub" / "x.txt").write_text("v1 x\\n")


@pipeline
def p():
    w(Output("report.txt"))
    wdir(Output("build/d"))
'''


def setup(project: Project) -> None:
    project.write("pipe.py", PIPE)
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.run("run")


def new_code(project: Project, version: str) -> None:
    """Change both steps' code, so that both execute on the next run."""
    project.write("pipe.py", PIPE.replace("v1", version))


def trashed(project: Project) -> Dict[str, str]:
    """What the trash holds: path under the trash folder -> contents, or '-> TARGET' for a
    symlink."""
    base = project.root / ".zenbuild" / "trash"
    out: Dict[str, str] = {}
    if not base.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(base).as_posix().split("/", 1)
            if len(rel) < 2:
                continue
            if p.is_symlink():
                out[rel[1]] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel[1]] = p.read_text()
    return out


def moved(stderr: str) -> List[str]:
    return sorted(ln.split("moved your version of ", 1)[1].split(" to ", 1)[0]
                  for ln in stderr.splitlines() if "moved your version of" in ln)


def outside(tmp_path: Path) -> Path:
    """A folder outside the project, with files the user keeps there."""
    there = tmp_path / "elsewhere"
    there.mkdir()
    (there / "a.txt").write_text("KEEP\n")
    (there / "mine.txt").write_text("MINE\n")
    (there / "x.txt").write_text("KEEP x\n")
    return there


def untouched(there: Path) -> None:
    assert sorted(p.name for p in there.iterdir()) == ["a.txt", "mine.txt", "x.txt"]
    assert (there / "a.txt").read_text() == "KEEP\n"
    assert (there / "mine.txt").read_text() == "MINE\n"
    assert (there / "x.txt").read_text() == "KEEP x\n"


# -- A: a hand edit is kept when its step executes --------------------------------------------

def test_a_hand_edited_file_output_goes_to_the_trash_when_its_step_executes(
        project: Project) -> None:
    setup(project)
    project.write("report.txt", "my hand-written notes\n")
    project.write("build/d/a.txt", "my notes\n")
    new_code(project, "v2")
    r = project.run("run")
    assert sorted(r.executed) == ["w", "wdir"]
    assert project.read("report.txt") == "v2\n" and project.read("build/d/a.txt") == "v2\n"
    assert moved(r.stderr) == ["build/d", "report.txt"]  # one line each, as for the folder
    assert trashed(project) == {"report.txt": "my hand-written notes\n",
                                "build/d/a.txt": "my notes\n", "build/d/sub/x.txt": "v1 x\n"}


def test_an_unedited_output_is_not_copied_to_the_trash(project: Project) -> None:
    setup(project)
    new_code(project, "v2")
    r = project.run("run")  # both execute over their own, unedited outputs
    assert sorted(r.executed) == ["w", "wdir"]
    assert "moved your version" not in r.output and trashed(project) == {}
    project.write("pipe.py", PIPE)  # v1 again: served from the store over v2's outputs
    r = project.run("run")
    assert sorted(r.cached) == ["w", "wdir"] and project.read("report.txt") == "v1\n"
    assert "moved your version" not in r.output and trashed(project) == {}


def test_a_file_output_edited_then_restored_by_hand_is_not_trashed(project: Project) -> None:
    setup(project)
    project.write("report.txt", "an edit\n")
    project.write("report.txt", "v1\n")  # back to what zenbuild stored: a new stat, same bytes
    new_code(project, "v2")
    r = project.run("run")
    assert sorted(r.executed) == ["w", "wdir"] and project.read("report.txt") == "v2\n"
    assert "moved your version" not in r.output and trashed(project) == {}


# -- B: a symlink at an Output is replaced, never followed -------------------------------------

def link_folder_output(project: Project, there: Path) -> None:
    import shutil

    shutil.rmtree(project.root / "build" / "d")
    os.symlink(there, project.root / "build" / "d")


@pytest.mark.parametrize("executes", [False, True], ids=["restored", "executed"])
def test_a_symlinked_output_folder_is_replaced_and_its_target_untouched(
        project: Project, tmp_path: Path, executes: bool) -> None:
    setup(project)
    there = outside(tmp_path)
    link_folder_output(project, there)
    if executes:
        new_code(project, "v2")
    r = project.run("run")
    assert sorted(r.executed if executes else r.cached) == ["w", "wdir"]
    untouched(there)
    d = project.root / "build" / "d"
    assert d.is_dir() and not d.is_symlink()
    v = "v2" if executes else "v1"
    assert project.read("build/d/a.txt") == f"{v}\n"
    assert project.read("build/d/sub/x.txt") == f"{v} x\n"
    assert sorted(p.name for p in d.iterdir()) == ["a.txt", "sub"]
    assert moved(r.stderr) == ["build/d"]
    assert trashed(project) == {"build/d": f"-> {there}"}  # the link itself, not its files
    assert "moved your version" not in project.run("run").output  # a real folder now


def test_a_symlinked_output_folder_is_replaced_even_when_its_target_matches(
        project: Project, tmp_path: Path) -> None:
    setup(project)
    there = tmp_path / "copy"
    import shutil

    shutil.copytree(project.root / "build" / "d", there)  # the very bytes the store holds
    link_folder_output(project, there)
    r = project.run("run")
    assert sorted(r.cached) == ["w", "wdir"]
    assert not (project.root / "build" / "d").is_symlink()
    assert project.read("build/d/a.txt") == "v1\n"
    assert trashed(project) == {"build/d": f"-> {there}"} and moved(r.stderr) == ["build/d"]
    assert sorted(p.name for p in there.iterdir()) == ["a.txt", "sub"]


def test_a_symlinked_folder_inside_an_output_folder_is_not_restored_through(
        project: Project, tmp_path: Path) -> None:
    setup(project)
    there = outside(tmp_path)
    import shutil

    shutil.rmtree(project.root / "build" / "d" / "sub")
    os.symlink(there, project.root / "build" / "d" / "sub")  # the store has sub/x.txt there
    r = project.run("run")
    assert sorted(r.cached) == ["w", "wdir"]
    untouched(there)
    sub = project.root / "build" / "d" / "sub"
    assert sub.is_dir() and not sub.is_symlink()
    assert project.read("build/d/sub/x.txt") == "v1 x\n"
    assert trashed(project) == {"build/d/sub": f"-> {there}"}
    assert moved(r.stderr) == ["build/d/sub"]


@pytest.mark.parametrize("executes", [False, True], ids=["restored", "executed"])
@pytest.mark.parametrize("same", [False, True], ids=["other-bytes", "same-bytes"])
def test_a_symlinked_file_output_is_replaced_and_its_target_untouched(
        project: Project, tmp_path: Path, executes: bool, same: bool) -> None:
    setup(project)
    target = tmp_path / "theirs.txt"
    target.write_text("v1\n" if same else "their own file\n")
    (project.root / "report.txt").unlink()
    os.symlink(target, project.root / "report.txt")
    if executes:
        new_code(project, "v2")
    r = project.run("run")
    assert "w" in (r.executed if executes else r.cached)
    assert target.read_text() == ("v1\n" if same else "their own file\n")
    out = project.root / "report.txt"
    assert not out.is_symlink() and out.read_text() == ("v2\n" if executes else "v1\n")
    assert trashed(project) == {"report.txt": f"-> {target}"}
    assert moved(r.stderr) == ["report.txt"]


def test_dry_run_touches_no_symlinked_output(project: Project, tmp_path: Path) -> None:
    setup(project)
    there = outside(tmp_path)
    link_folder_output(project, there)
    project.run("run", "--dry-run")
    untouched(there)
    assert (project.root / "build" / "d").is_symlink() and trashed(project) == {}


@pytest.mark.parametrize("executes", [False, True], ids=["restored", "executed"])
def test_a_trash_that_cannot_take_a_hand_edit_stops_the_run_and_keeps_it(
        project: Project, executes: bool) -> None:
    setup(project)
    project.write("report.txt", "my hand-written notes\n")
    (project.root / ".zenbuild" / "trash").write_text("not a folder")
    if executes:
        new_code(project, "v2")
    r = project.run("run", check=2)
    assert "cannot move your version of report.txt to the trash" in r.stderr
    assert "Traceback" not in r.output
    assert project.read("report.txt") == "my hand-written notes\n"


# -- units: the trash across file systems, outputs a failed capture left -----------------------

def test_the_trash_moves_a_file_a_folder_and_a_link_across_file_systems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "f.txt").write_text("in a folder")
    (root / "f.txt").write_text("a file")
    os.symlink(tmp_path, root / "link")
    store = Store(str(tmp_path / "store"))
    real_replace = os.replace

    def no_rename(src: str, dst: str) -> None:  # the store on another file system
        if "trash" in str(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_rename)
    said: List[str] = []
    trash = Trash(store, said.append)
    for rel in ("dir", "f.txt", "link"):
        assert trash.keep_if_users(str(root), rel, None)
        assert not os.path.lexists(root / rel)
    dest = Path(trash.folder())
    assert (dest / "dir" / "f.txt").read_text() == "in a folder"
    assert (dest / "f.txt").read_text() == "a file"
    assert os.readlink(dest / "link") == str(tmp_path)
    assert len(said) == 3 and all("moved your version of" in s for s in said)
    store.close()


def test_what_a_failed_capture_left_is_the_steps_until_edited(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "big.bin").write_bytes(b"the step's, not stored")
    store = Store(str(tmp_path / "store"))
    Unstored(store).add(str(root), ["big.bin", "absent.bin"])
    said: List[str] = []
    trash = Trash(store, said.append)
    assert not trash.keep_if_users(str(root), "big.bin", StatCache(), Unstored(store))
    assert said == [] and (root / "big.bin").exists()
    (root / "big.bin").write_bytes(b"the user's edit")
    assert trash.keep_if_users(str(root), "big.bin", StatCache(), Unstored(store))
    assert len(said) == 1 and not (root / "big.bin").exists()
    store.close()


def test_the_walk_lists_files_not_folder_links_and_cache_info_counts_a_trashed_link(
        tmp_path: Path) -> None:
    from zenbuild.inspect import trash as trash_info
    from zenbuild.store.outputs import _walk_files

    base = tmp_path / "out"
    (base / "sub" / "deep").mkdir(parents=True)
    (base / "a.txt").write_text("a")
    (base / "sub" / "deep" / "b.txt").write_text("b")
    (base / "f.txt.zenbuild-tmp-999999999").write_text("a dead run's temp file")
    os.symlink(tmp_path, base / "sub" / "dirlink")
    os.symlink(base / "a.txt", base / "filelink")
    dead: List[str] = []
    links: List[str] = []
    assert _walk_files(str(base), dead, links) == ["a.txt", "filelink", "sub/deep/b.txt"]
    assert links == ["sub/dirlink"] and dead == [str(base / "f.txt.zenbuild-tmp-999999999")]
    store = Store(str(tmp_path / "store"))
    kept = Path(Trash(store).folder())
    (kept / "build").mkdir(parents=True)
    os.symlink(tmp_path, kept / "build" / "d")  # what a symlinked Output folder leaves there
    [folder] = trash_info.folders(store)
    assert folder.files == 1
    store.close()


def test_a_failed_steps_partial_output_is_its_own_on_the_next_run(project: Project) -> None:
    """What a step wrote before it raised is the step's, not the user's: its next run
    overwrites it without a trash copy or a message (a hand edit of it is still kept)."""
    project.write("pipe.py", '''
        import os
        from zenbuild import Output, pipeline, step


        @step
        def w(out: Output) -> None:
            out.write_text("partial")
            if os.environ.get("ZB_FAIL"):
                raise RuntimeError("boom")
            out.write_text("done")


        @pipeline
        def p():
            w(Output("report.txt"))
    ''')
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    r = project.run("run", env={"ZB_FAIL": "1"}, check=1)
    assert project.read("report.txt") == "partial"
    r = project.run("run")
    assert r.executed == ["w"] and project.read("report.txt") == "done"
    assert "moved your version" not in r.output
    assert not (project.root / ".zenbuild" / "trash").exists()
    # a hand edit after a failure is the user's: kept
    project.run("run", "--rerun", "w", env={"ZB_FAIL": "1"}, check=1)
    (project.root / "report.txt").write_text("my notes")
    r = project.run("run")
    assert "moved your version of report.txt" in r.output


def test_two_runs_in_one_second_keep_both_hand_edits(tmp_path: Path) -> None:
    """Each run's trash is a folder of its own, also for two runs of one process within the
    same second (the Python API, watch): the second user's version does not replace the
    first in the trash (both were announced as kept)."""
    import subprocess
    import sys

    root = tmp_path / "proj"
    root.mkdir()
    (root / "zenbuild.toml").write_text('pipelines = ["pipe:p"]\n')
    (root / "pipe.py").write_text(
        "from zenbuild import Output, pipeline, step\n\n\n"
        "@step\ndef w(out: Output, n: int) -> None:\n    out.write_text(f'made {n}')\n\n\n"
        "@pipeline\ndef p(n: int = 0):\n    w(Output('report.txt'), n)\n")
    code = (
        "import sys, time\n"
        "sys.path.insert(0, '.')\n"
        "import pipe\n"
        "pipe.p(n=0).run()\n"
        "for i in (1, 2, 3):\n"
        "    open('report.txt', 'w').write(f'my edit {i}')\n"
        "    pipe.p(n=i).run()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(root), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("moved your version of report.txt") == 3
    kept = sorted(f.read_text() for f in (root / ".zenbuild" / "trash").rglob("report.txt*"))
    assert kept == ["my edit 1", "my edit 2", "my edit 3"]


def test_cache_gc_knows_the_numbered_trash_folders() -> None:
    from zenbuild.inspect.trash import _when

    assert _when("20260101-120000-4242") is not None
    assert _when("20260101-120000-4242-2") == _when("20260101-120000-4242")
    assert _when("my-notes") is None and _when("20260101-120000-4242-x") is None


def test_trashes_made_in_the_same_second_get_folders_of_their_own(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """The same as the runs above, with the clock held still (so the test does not depend on
    the runs falling in one second): two Trash objects, two folders, both copies kept."""
    import zenbuild.store.outputs as outputs

    monkeypatch.setattr(outputs.time, "strftime", lambda fmt, *a: "20260101-120000")
    store = Store(str(tmp_path / "st"))
    try:
        root = tmp_path / "proj"
        root.mkdir()
        said: List[str] = []
        folders = []
        for i in (1, 2):
            (root / "report.txt").write_text(f"my edit {i}")
            trash = Trash(store, said.append)
            assert trash.keep_if_users(str(root), "report.txt", None)
            folders.append(trash.folder())
        assert folders[0] != folders[1] and len(said) == 2
        assert [Path(f, "report.txt").read_text() for f in folders] == ["my edit 1", "my edit 2"]
    finally:
        store.close()


LINK_PIPE = '''
import os
from zenbuild import File, Output, pipeline, step


@step
def link(src: File, out: Output) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("../data/" + src.name, out)
    return 1


@step
def dangling(out: Output) -> int:
    os.symlink("nowhere", out)
    return 2


@step
def read(cur: File, copy: Output) -> str:
    copy.write_text(cur.read_text())
    return cur.read_text()


@pipeline
def p():
    link(File("data/in.txt"), Output("build/current.txt"))
    dangling(Output("gone"))
    read(File("build/current.txt"), Output("copy.txt"))
'''


def test_an_output_that_is_a_symlink_is_kept_and_restored_as_the_link(project: Project) -> None:
    # it was stored as what it pointed at: the next no-op run called the step's own link
    # "your version", moved it to the trash and put a copy in its place
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("data/in.txt", "v1\n")
    project.write("pipe.py", LINK_PIPE)
    cur, gone = project.root / "build" / "current.txt", project.root / "gone"
    r = project.run("run")
    assert sorted(r.executed) == ["dangling", "link", "read"], r
    assert os.readlink(cur) == "../data/in.txt" and os.readlink(gone) == "nowhere"
    r = project.run("run")
    assert r.executed == [] and "trash" not in r.output, r
    assert os.readlink(cur) == "../data/in.txt" and os.readlink(gone) == "nowhere"
    assert "up to date" in project.run("status").stdout
    cur.unlink()
    gone.unlink()
    r = project.run("run")
    assert r.executed == [] and sorted(r.cached) == ["dangling", "link", "read"], r
    assert os.readlink(cur) == "../data/in.txt" and os.readlink(gone) == "nowhere"
    cur.unlink()
    cur.write_text("mine\n")  # a file of the user's where the link was: kept in the trash
    r = project.run("run")
    assert r.executed == [] and "moved your version of build/current.txt" in r.output, r
    assert os.readlink(cur) == "../data/in.txt"
    assert "mine\n" in trashed(project).values()
    before = trashed(project)
    (project.root / "data" / "in.txt").write_text("v2\n")  # the reader sees through the link
    r = project.run("run")
    assert sorted(r.executed) == ["link", "read"], r
    assert (project.root / "copy.txt").read_text() == "v2\n"
    # the step's own link (its entry recorded it) is removed, not called the user's
    assert "moved your version" not in r.output and trashed(project) == before, r
    assert os.readlink(cur) == "../data/in.txt"


def test_a_link_output_naming_a_folder_above_the_store_is_not_followed(project: Project) -> None:
    # os.symlink("..", out): the placement check followed the link, found the store "inside"
    # the Output, and refused every later run; clearing or restoring never goes through it
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        import os
        from zenbuild import Output, pipeline, step

        @step
        def mk(out: Output, v: int = 1) -> int:
            os.symlink("..", out)
            return v

        @pipeline
        def p(v: int = 1):
            mk(Output("build/top"), v=v)
    """)
    (project.root / "build").mkdir()
    top = project.root / "build" / "top"
    assert project.run("run").executed == ["mk"]
    r = project.run("run")
    assert r.cached == ["mk"] and os.readlink(top) == "..", r
    r = project.run("run", "-p", "v=2")  # executes again: its own link goes, nothing through it
    assert r.executed == ["mk"] and os.readlink(top) == "..", r
    assert "moved your version" not in r.output and (project.root / "pipe.py").is_file()
    top.unlink()
    r = project.run("run")
    assert r.cached == ["mk"] and os.readlink(top) == "..", r
    assert (project.root / ".zenbuild").is_dir() and (project.root / "zenbuild.toml").is_file()


def test_a_sparse_output_is_stored_and_restored_with_its_holes(project: Project) -> None:
    # a 64 MiB image with two small data extents took 64 MiB in the store and on restore
    probe = project.root / "probe.img"
    with open(probe, "wb") as f:
        f.truncate(64 << 20)
    sparse_fs = os.stat(probe).st_blocks * 512 < (1 << 20)
    probe.unlink()
    if not sparse_fs:  # pragma: no cover - a filesystem without holes (tmpfs has them)
        pytest.skip("this filesystem makes no sparse files")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", """
        from zenbuild import File, Output, pipeline, step

        @step
        def image(out: Output) -> int:
            with open(out, "wb") as f:
                f.write(b"head" * 1024)
                f.seek(40 << 20)
                f.write(b"tail" * 1024)
                f.truncate(64 << 20)
            return 1

        @step
        def size(img: File) -> int:
            data = img.read_bytes()
            return len(data) + data.count(b"tail")

        @pipeline
        def p():
            size(File("disk.img"))
            image(Output("disk.img"))
    """)
    r = project.run("run")
    assert sorted(r.executed) == ["image", "size"], r
    img = project.root / "disk.img"
    want = img.read_bytes()
    cas = project.root / ".zenbuild"
    stored = sum(os.stat(os.path.join(d, n)).st_blocks * 512
                 for d, _, names in os.walk(cas) for n in names)
    assert stored < (8 << 20), stored  # not the image's 64 MiB
    img.unlink()
    r = project.run("run")
    assert r.executed == [] and sorted(r.cached) == ["image", "size"], r
    assert img.read_bytes() == want
    assert os.stat(img).st_blocks * 512 < (8 << 20)


# -- zenbuild's own output is what its entry recorded there; the step starts without it -------

LEFTOVER = '''
from zenbuild import Output, pipeline, step


@step
def make(n: int, out: Output) -> None:
    if n < 5:  # (a tool that silently writes nothing for some inputs)
        out.write_text(f"n={n}\\n")


@step
def fetch(version: str, out: Output) -> None:
    if not out.exists():  # "skip if already downloaded"
        out.write_text(f"dataset {version}\\n")


@step
def shape(kind: str, out: Output) -> None:
    if kind == "dir":
        out.mkdir()
        (out / "a.txt").write_text("in a folder\\n")
    else:
        out.write_text("a file\\n")


@pipeline
def p(n: int = 1, version: str = "v1", kind: str = "file"):
    make(n, Output("build/out.txt"))
    fetch(version, Output("data/ds.txt"))
    shape(kind, Output("build/shape"))
'''


def test_a_step_that_executes_again_starts_without_its_earlier_output(project: Project) -> None:
    """The file an earlier run left at an Output is removed before the step executes again:
    a step that does not write it now fails as on a clean checkout (it was captured and
    cached as the new params' result), a "skip if it exists" step makes the new one, and a
    step may make a folder where its file was."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", LEFTOVER)
    project.run("run")
    r = project.run("run", "--param", "version=v2", "--param", "kind=dir")
    assert sorted(r.executed) == ["fetch", "shape"], r.output
    assert project.read("data/ds.txt") == "dataset v2\n"
    assert project.read("build/shape/a.txt") == "in a folder\n"
    r = project.run("run", "--param", "n=7", "--param", "version=v2", "--param", "kind=dir",
                    check=1)
    assert "declared Output('build/out.txt') but did not write it" in r.output, r.output
    assert not (project.root / "build/out.txt").exists()
    assert "moved your version" not in r.output and trashed(project) == {}
    r = project.run("run", "--param", "n=1", "--param", "version=v1", check=0)  # all served
    assert sorted(r.cached) == ["fetch", "make", "shape"], r.output
    assert project.read("data/ds.txt") == "dataset v1\n" and project.read("build/out.txt") == "n=1\n"
    assert project.read("build/shape") == "a file\n"


def test_a_copy_of_an_output_file_kept_in_its_folder_is_the_users(project: Project) -> None:
    """A file whose bytes the store holds is not zenbuild's because of that: a copy the user
    keeps beside the step's file goes to the trash, when the step executes and when its
    folder is restored, never silently removed."""
    setup(project)
    project.write("build/d/a_keep.txt", project.read("build/d/a.txt"))  # the same bytes
    new_code(project, "v2")
    r = project.run("run")
    assert sorted(r.executed) == ["w", "wdir"]
    assert moved(r.stderr) == ["build/d"] and trashed(project)["build/d/a_keep.txt"] == "v1\n"
    assert not (project.root / "build/d/a_keep.txt").exists()
    project.write("build/d/a_keep2.txt", "v1\n")  # the bytes of v1's a.txt, which is stored
    project.write("pipe.py", PIPE)  # v1 again: its folder is restored
    r = project.run("run")
    assert sorted(r.cached) == ["w", "wdir"] and project.read("build/d/a.txt") == "v1\n"
    assert moved(r.stderr) == ["build/d/a_keep2.txt"]
    assert not (project.root / "build/d/a_keep2.txt").exists()
    assert any(k.endswith("build/d/a_keep2.txt") and v == "v1\n"
               for k, v in trashed(project).items())


SAME_PLACE = '''
from zenbuild import Output, pipeline, step


def make(out, text):
    if out.suffix:
        out.write_text(text)
    else:
        out.mkdir()


@step
def a(out: Output) -> None:
    make(out, "made by a")


@step
def b(out: Output) -> None:
    make(out, "made by b")


@pipeline
def p():
    a(Output(ONE))
    b(Output(OTHER))
'''


@pytest.mark.parametrize("one,other", [("real/x.txt", "alias/x.txt"),
                                       ("real/d", "alias/d/y.txt")])
def test_two_outputs_that_are_one_place_through_a_link_are_refused(project: Project, one: str,
                                                                   other: str) -> None:
    """Outputs compared as written (real/x.txt, alias/x.txt) were not refused when a link
    makes them one file: with -j 2 both steps wrote it and one entry kept the other step's
    bytes. They are refused, exit 2, before any step runs; so is one inside the other."""
    (project.root / "real").mkdir()
    os.symlink("real", project.root / "alias")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", SAME_PLACE.replace("ONE", repr(one)).replace("OTHER", repr(other)))
    r = project.run("run", "-j", "2", check=2)
    assert f"steps a and b declare Outputs {one!r} and {other!r}" in r.output, r.output
    assert "once the symbolic links on the way are followed" in r.output
    assert r.started == [] and os.listdir(project.root / "real") == []
    assert "Traceback" not in r.output


THROUGH = '''
import os
from pathlib import Path

from zenbuild import Output, pipeline, step

HERE = Path(__file__).parent


@step
def a(out: Output) -> None:
    out.mkdir()
    (HERE / "build" / "shared").mkdir(parents=True, exist_ok=True)
    os.symlink("../shared", out / "data")
    (out / "data" / "x.txt").write_text("through the link")


@pipeline
def p():
    a(Output("build/o"))
'''


def test_a_write_through_a_link_out_of_the_output_folder_is_an_undeclared_write(
        project: Project) -> None:
    """The store keeps a link in an Output folder as the link: a file the step wrote through
    it (build/o/data/x.txt, data -> ../shared) lands in build/shared, which nothing restores.
    It is named as an undeclared write (it was not: the path was inside the Output); a file
    there the step did not touch is not."""
    project.write("build/shared/old.txt", "there before")
    os.utime(project.root / "build/shared/old.txt", ns=(1_000_000_000, 1_000_000_000))
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", THROUGH)
    r = project.run("run")
    assert "Warning: step a wrote build/shared/x.txt, which will not be restored" in r.output, \
        r.output
    assert "old.txt" not in r.output


NOISE = '''
from pathlib import Path

from zenbuild import File, Output, pipeline, step

HERE = Path(__file__).parent


@step
def make(n: int, out: Output) -> None:
    out.write_text(f"n={n} VERSION\\n")


@step
def named(p: int, out: Output) -> None:
    out.write_text(f"p={p} VERSION\\n")


@step
def rw(n: int, src: File, out: Output) -> None:
    text = Path(src).read_text()
    if n == 2:
        Path(src).write_text(text)  # rewrites its input: used, not cached
    out.write_text(f"n={n}\\n")


@pipeline
def pa(p: int = 1, n: int = 1):
    make(1, Output("build/out.txt"))
    named(p, Output(f"build/out_{p}.txt"))
    rw(n, File("data/in.txt"), Output("build/rw.txt"))


@pipeline
def pb():
    make(2, Output("build/out.txt"))
'''


def test_what_zenbuild_wrote_is_its_own_whichever_entry_recorded_it(project: Project) -> None:
    """zenbuild's own output is what any entry recorded at that path, not only the step's
    latest: an Output whose path a param names, the same step run by two pipelines, and a
    result used but not cached then served over went to the trash as "your version"."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:pa", "pipe:pb"]\n')
    project.write("data/in.txt", "x\n")
    project.write("pipe.py", NOISE)
    for args in (["pa"], ["pb"], ["pa"], ["pb"], ["pa", "--param", "p=2"],
                 ["pa", "--param", "p=1"], ["pa", "--param", "n=2"], ["pa", "--param", "n=1"]):
        r = project.run("run", *args)
        assert "moved your version" not in r.output, (args, r.output)
    project.write("pipe.py", NOISE.replace("VERSION", "v2"))
    r = project.run("run", "pa", "--param", "p=2")
    assert "moved your version" not in r.output, r.output
    assert project.read("build/out_2.txt") == "p=2 v2\n"
    assert trashed(project) == {}


LINKED = '''
import os
import time

from zenbuild import Output, pipeline, step


@step
def a(out: Output) -> None:
    out.mkdir()
    (out / "x.txt").write_text("a's")
    later = time.time_ns() + 3_600_000_000_000  # (newer than b's start whatever the timing)
    os.utime(out / "x.txt", ns=(later, later))


@step
def b(dep: str, out: Output) -> None:
    out.mkdir()
    os.symlink("../shared", out / "shared")  # a link to a's Output: b writes nothing there


@pipeline
def p():
    a(Output("build/shared"))
    b("after a", Output("build/b"))
'''


def test_a_link_to_another_steps_output_is_no_undeclared_write(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", LINKED)
    r = project.run("run")
    assert sorted(r.executed) == ["a", "b"] and "Warning" not in r.output, r.output
