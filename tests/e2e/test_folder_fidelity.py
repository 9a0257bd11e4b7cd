"""End-to-end: a folder Output comes back exactly as its step left it (bytes, file modes, empty
folders, symlinks as links with their target text, folder modes), from the local store after
`rm -rf` or a hand edit, and from a remote cache; a downstream Dir reruns when a mode, a link
or an empty folder changes; a remote entry may not make a link out of its folder unsigned."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
from conftest import Project

from tests.e2e.nginx_server import Nginx, nginx_binary
from tests.e2e.test_remote_cache import TICKER, Checkout
from tests.e2e.test_remote_security import keygen

PIPE = '''
import os

from zenbuild import Dir, Output, pipeline, step
from ticker import tick


@step
def make(out: Output, key_mode: int = 0o600, target: str = "data.txt",
         outside: str = "../../shared/config") -> int:
    tick("make")
    out.mkdir(parents=True)
    (out / "data.txt").write_text("data")
    (out / "other.txt").write_text("other")
    (out / "copy.txt").write_text("data")
    key = out / "key.pem"
    key.write_text("secret")
    key.chmod(key_mode)
    script = out / "bin" / "run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\\necho hi\\n")
    script.chmod(0o750)
    ro = out / "ro.txt"
    ro.write_text("read only")
    ro.chmod(0o444)
    (out / "empty" / "deeper").mkdir(parents=True)
    (out / "private").mkdir()
    (out / "private" / "x.txt").write_text("x")
    (out / "private").chmod(0o700)
    (out / "sealed").mkdir()
    (out / "sealed" / "f.txt").write_text("f")
    (out / "sealed").chmod(0o500)  # read-only: restored last, cleared when make reruns
    os.symlink(target, out / "latest")
    os.symlink("private", out / "dirlink")
    os.symlink("no-such-file", out / "dangling")
    os.symlink(outside, out / "bin" / "config")
    return 1


@step
def use(d: Dir) -> int:
    tick("use")
    return len(os.listdir(d))


@pipeline
def main(key_mode: int = 0o600, target: str = "data.txt", outside: str = "../../shared/config"):
    make(Output("build/out"), key_mode, target, outside)
    use(Dir("build/out"))
'''


def checkout(root: Path, toml: str = "") -> Checkout:
    root.mkdir(parents=True)
    p = Checkout(root)
    p.write("ticker.py", TICKER)
    p.write("zenbuild.toml", 'pipelines = ["pipe:main"]\n' + toml)
    p.write("pipe.py", PIPE)
    return p


Entry = Tuple[str, str]  # (kind and mode, content or target)


def snapshot(folder: Path) -> Dict[str, Entry]:
    """Everything in ``folder``, never following a link: path -> (kind mode, bytes/target)."""
    out: Dict[str, Entry] = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            st = os.lstat(p)
            mode = f"{stat.S_IMODE(st.st_mode):o}"
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (f"dir {mode}", "")
            else:
                out[rel] = (f"file {mode}", p.read_bytes().decode())
    return out


def rm_rf(folder: Path) -> None:
    for dirpath, dirs, _files in os.walk(folder):
        for d in dirs:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o755)
    shutil.rmtree(folder)


EXPECTED = {
    "data.txt": ("file 644", "data"),
    "other.txt": ("file 644", "other"),
    "copy.txt": ("file 644", "data"),
    "key.pem": ("file 600", "secret"),
    "ro.txt": ("file 444", "read only"),
    "bin/run.sh": ("file 750", "#!/bin/sh\necho hi\n"),
    "bin": ("dir 755", ""),
    "bin/config": ("link", "../../shared/config"),
    "empty": ("dir 755", ""),
    "empty/deeper": ("dir 755", ""),
    "private": ("dir 700", ""),
    "private/x.txt": ("file 644", "x"),
    "sealed": ("dir 500", ""),
    "sealed/f.txt": ("file 644", "f"),
    "latest": ("link", "data.txt"),
    "dirlink": ("link", "private"),
    "dangling": ("link", "no-such-file"),
}


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Checkout]:
    old = os.umask(0o022)  # what EXPECTED's plain modes assume
    try:
        p = checkout(tmp_path / "a")
        r = p.run("run")
        assert sorted(r.executed) == ["make", "use"], r
        p.ticks()
        yield p
    finally:
        os.umask(old)


def test_a_deleted_folder_comes_back_with_modes_links_and_empty_folders(local: Project) -> None:
    out = local.root / "build" / "out"
    made = snapshot(out)
    assert made == EXPECTED
    rm_rf(out)
    r = local.run("run")
    assert r.executed == [] and sorted(r.cached) == ["make", "use"], r
    assert snapshot(out) == made
    r = local.run("run")  # and now nothing is left to do: no restore, no trash
    assert r.executed == [] and ".zenbuild/trash" not in r.output, r
    assert snapshot(out) == made


def test_a_hand_edited_folder_is_put_back_and_the_edit_kept_in_the_trash(local: Project) -> None:
    out = local.root / "build" / "out"
    made = snapshot(out)
    (out / "data.txt").write_text("my edit")
    (out / "key.pem").chmod(0o644)  # a mode edit: same bytes
    os.unlink(out / "latest")
    os.symlink("other.txt", out / "latest")  # a retargeted link
    os.unlink(out / "dirlink")
    (out / "dirlink").mkdir()  # a folder where a link was
    (out / "dirlink" / "mine.txt").write_text("mine")
    os.rmdir(out / "empty" / "deeper")
    (out / "private").chmod(0o755)
    (out / "extra").mkdir()  # an empty folder the step did not make
    (out / "sealed").chmod(0o700)
    (out / "sealed" / "f.txt").write_text("edited in a read-only folder")
    (out / "sealed").chmod(0o500)
    r = local.run("run")
    assert r.executed == [] and sorted(r.cached) == ["make", "use"], r
    assert snapshot(out) == made
    trash = local.root / ".zenbuild" / "trash"
    kept = {str(p.relative_to(next(trash.iterdir()))): p for p in trash.rglob("*")}
    assert kept["build/out/data.txt"].read_text() == "my edit"
    assert kept["build/out/dirlink/mine.txt"].read_text() == "mine"
    assert kept["build/out/sealed/f.txt"].read_text() == "edited in a read-only folder"
    assert os.readlink(kept["build/out/latest"]) == "other.txt"
    assert "moved your version of build/out/data.txt" in r.output


def test_a_link_planted_inside_the_folder_is_never_written_through(
        local: Project, tmp_path: Path) -> None:
    out = local.root / "build" / "out"
    made = snapshot(out)
    victim = tmp_path / "victim"
    victim.mkdir()
    rm_rf(out / "bin")
    os.symlink(victim, out / "bin")  # a link where the folder bin/ was
    os.unlink(out / "key.pem")
    os.symlink(victim / "key.pem", out / "key.pem")  # a dangling link where a file goes
    r = local.run("run")
    assert r.executed == [], r
    assert snapshot(out) == made
    assert list(victim.iterdir()) == []  # nothing was written through either link


def test_a_downstream_dir_reruns_when_a_mode_a_link_or_an_empty_folder_changes(
        local: Project) -> None:
    out = local.root / "build" / "out"
    r = local.run("run", "--param", "key_mode=416")  # the same bytes, another mode
    assert sorted(r.executed) == ["make", "use"], r
    assert stat.S_IMODE(os.lstat(out / "key.pem").st_mode) == 0o640
    r = local.run("run", "--param", "key_mode=416", "--param", "target=copy.txt")
    assert sorted(r.executed) == ["make", "use"], r  # the same bytes through the link
    assert os.readlink(out / "latest") == "copy.txt"
    r = local.run("run", "--param", "key_mode=416", "--param", "target=copy.txt")
    assert r.executed == [], r
    os.rmdir(out / "empty" / "deeper")  # an edit: restored, and use stays cached
    r = local.run("run", "--param", "key_mode=416", "--param", "target=copy.txt")
    assert r.executed == [] and (out / "empty" / "deeper").is_dir(), r
    r = local.run("run")  # back to the first result: served from the store, use too
    assert r.executed == [] and snapshot(out) == EXPECTED, r


def test_a_fifo_in_an_output_folder_is_used_but_never_cached(tmp_path: Path) -> None:
    p = checkout(tmp_path / "f")
    p.write("pipe.py", PIPE.replace('    return 1\n', '    os.mkfifo(out / "pipe")\n    return 1\n', 1))
    r = p.run("run")
    assert sorted(r.executed) == ["make", "use"], r
    assert "build/out/pipe is a fifo, which the store cannot keep" in r.output, r
    r = p.run("run")
    assert "make" in r.executed, r  # not cached: it executes again, and says why


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    if nginx_binary() is None:
        pytest.skip("nginx missing: tests/sysdeps/nginx.sh")
    server = Nginx(tmp_path / "nginx").start()
    yield server
    server.stop()


def test_a_folder_from_the_remote_cache_is_exact_when_its_links_stay_inside(
        tmp_path: Path, nginx: Nginx) -> None:
    a = checkout(tmp_path / "a")
    a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload",
          "--param", "outside=../run.sh")
    made = snapshot(a.root / "build" / "out")
    b = checkout(tmp_path / "elsewhere" / "b")
    r = b.run("run", "--remote-cache", nginx.url, "--param", "outside=../run.sh")
    assert r.executed == [] and sorted(r.cached) == ["make", "use"], r
    assert snapshot(b.root / "build" / "out") == made


def test_an_unsigned_remote_entry_may_not_link_out_of_its_folder(
        tmp_path: Path, nginx: Nginx) -> None:
    a = checkout(tmp_path / "a")
    a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload")
    b = checkout(tmp_path / "b")
    r = b.run("run", "--remote-cache", nginx.url)
    assert "make" in r.executed, r  # refused: computed here instead, with a warning
    assert "bin/config -> '../../shared/config' that points outside its folder" in r.output, r
    assert snapshot(b.root / "build" / "out") == snapshot(a.root / "build" / "out")


def test_a_signed_remote_entry_may_link_out_of_its_folder(tmp_path: Path, nginx: Nginx) -> None:
    key = keygen(tmp_path / "keys" / "ci")
    a = checkout(tmp_path / "a", f'[cache]\nsigning_key_file = "{tmp_path / "keys" / "ci"}"\n')
    a.run("run", "--remote-cache", nginx.url, "--remote-cache-upload")
    b = checkout(tmp_path / "b", f'[cache]\nremote = "{nginx.url}"\ntrusted_keys = ["{key}"]\n')
    r = b.run("run")
    assert r.executed == [] and sorted(r.cached) == ["make", "use"], r
    assert snapshot(b.root / "build" / "out") == snapshot(a.root / "build" / "out")


def test_after_cache_gc_a_rerun_knows_its_own_links(local: Project) -> None:
    local.run("cache", "gc")  # the entry that recorded the links stays
    r = local.run("run", "--rerun", "make")
    assert r.executed == ["make"], r
    assert "moved your version" not in r.output, r  # the old folder was zenbuild's: cleared
    assert snapshot(local.root / "build" / "out") == EXPECTED


TOP = '''
import os

from zenbuild import Output, pipeline, step


@step
def pointer(out: Output) -> None:
    out.mkdir(parents=True)
    os.symlink("../runs/2024-01", out / "current")  # the folder holds only a link


@step
def private(out: Output) -> None:
    out.mkdir(parents=True)
    (out / "inner").mkdir()
    (out / "inner" / "x.txt").write_text("x")
    out.chmod(0o700)


@pipeline
def p():
    pointer(Output("build/ptr"))
    private(Output("build/priv"))
'''


def test_an_output_folder_comes_back_with_its_own_mode_and_a_lone_link(project: Project) -> None:
    """The Output folder itself is restored with the mode its step gave it (it came back
    0755), and a folder holding only a link is made before the link (the restore died with
    FileNotFoundError). A changed mode of the folder is told and put back."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", TOP)
    project.run("run")
    shutil.rmtree(project.root / "build")
    r = project.run("run")
    assert sorted(r.cached) == ["pointer", "private"], r.output
    assert os.readlink(project.root / "build/ptr/current") == "../runs/2024-01"
    assert stat.S_IMODE(os.stat(project.root / "build/priv").st_mode) == 0o700
    assert (project.root / "build/priv/inner/x.txt").read_text() == "x"
    os.chmod(project.root / "build/priv", 0o777)
    r = project.run("status", check=None)
    assert "output build/priv: differs from the stored result" in r.output, r.output
    r = project.run("run")
    assert r.cached == ["pointer", "private"] or sorted(r.cached) == ["pointer", "private"]
    assert stat.S_IMODE(os.stat(project.root / "build/priv").st_mode) == 0o700
    assert project.run("run").output.count("Restored") == 0


FIFOS = '''
import os

from zenbuild import Output, pipeline, step


@step
def a(out: Output) -> None:
    os.mkfifo(out)


@step
def b(out: Output) -> None:
    out.mkdir()
    (out / "x.txt").write_text("x")
    os.mkfifo(out / "p")


@pipeline
def p():
    a(Output("build/pipe"))
    b(Output("build/dir"))
'''


def test_a_fifo_output_is_used_not_cached_and_taken_back_as_the_steps(project: Project) -> None:
    """A fifo at a file Output is said to be one the store cannot keep (it was "declared
    Output but did not write it", exit 1), as in a folder Output; and on the next run what
    the step left is its own: removed without a trash copy, not moved to the trash every
    run."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", FIFOS)
    r = project.run("run")
    assert "output build/pipe is a fifo, which the store cannot keep" in r.output, r.output
    assert "output build/dir/p is a fifo, which the store cannot keep" in r.output
    r = project.run("run")
    assert sorted(r.executed) == ["a", "b"], r.output
    assert "moved your version" not in r.output, r.output
    assert not (project.root / ".zenbuild" / "trash").exists()
    assert stat.S_ISFIFO(os.lstat(project.root / "build/pipe").st_mode)
