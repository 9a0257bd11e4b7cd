"""The dry run's overlay: how a path is found after the pretended restores (through the links
they restore and those on disk), and what a listing or a pattern finds then. The oracle is a
copy of the project with the same restores really made."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from zenbuild.digest import StatCache
from zenbuild.discovered import Discovery
from zenbuild.overlay import OutputOverlay
from zenbuild.trace.globs import digest as glob_digest
from zenbuild.trace.globs import skipped
from zenbuild.trace.hooks import listing_digest


def test_where_follows_restored_links_and_links_on_disk(tmp_path: Path) -> None:
    root = str(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "real.txt").write_text("x")
    os.symlink("data", tmp_path / "alias")  # on disk: alias/real.txt is data/real.txt
    os.symlink(f"../{tmp_path.name}/data", tmp_path / "again")  # out of the project and back
    over = OutputOverlay()
    over.add_file("build/d/a.txt", "da", 1)
    over.add_link("build/d/to_a", "a.txt")
    over.add_link("build/l", "../data/real.txt")
    over.add_link("build/out", "/nowhere/else.txt")
    over.add_link("build/loop", "loop")
    over.add_link("build/in", str(tmp_path / "data" / "real.txt"))  # absolute, in the project
    over.remove("build/d/stray.txt")
    assert over.where(root, "build/d/to_a") == (("da", 1), None)
    assert over.where(root, "build/l") == (None, "data/real.txt")
    assert over.where(root, "build/in") == (None, "data/real.txt")
    assert over.where(root, "alias/real.txt") == (None, "data/real.txt")
    assert over.where(root, "again/real.txt") == (None, "data/real.txt")
    assert over.where(root, "build/out") == (None, "/nowhere/else.txt")
    assert over.where(root, "build/loop") == (None, None)
    assert over.where(root, "build/d/stray.txt") == (None, None)  # the restore removes it
    assert over.where(root, "other.txt") == (None, "other.txt")  # the disk answers
    over.remove("data/real.txt")
    assert over.where(root, "build/l") == (None, None)


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for rel, text in [(".venv/lib/m.py", ""), ("data/x.txt", "x"), ("raw/r.txt", "r"),
                      ("notes/keep.txt", "k"), ("notes/stray.txt", "s"), ("build/d/old.txt", "o"),
                      ("build/d/sub/gone.txt", "g"), (".zenbuild/x", ""), ("top.txt", "t")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.txt").write_text("o")
    os.symlink("../raw", root / "data" / "cur")
    os.symlink("../outside", root / "ext")  # leaves the project
    os.symlink("build", root / "alias")
    return root


OPS: List[Tuple[str, str, str]] = [
    ("remove", "notes/stray.txt", ""),
    ("remove", "top.txt", ""),
    ("remove", "build/d/old.txt", ""),  # a folder restored exactly: what is not its goes
    ("remove", "build/d/sub/gone.txt", ""),
    ("dir", "build/d/e", ""),
    ("file", "build/d/a.txt", ""),
    ("file", "build/d/sub/b.txt", ""),
    ("link", "build/d/l", "a.txt"),
    ("link", "build/top", "d/sub"),
    ("file", "out.txt", ""),
    ("file", "gen/deep/n.txt", ""),
    ("file", "raw/new.txt", ""),
]


def _pretend(over: OutputOverlay) -> None:
    for kind, rel, target in OPS:
        if kind == "remove":
            over.remove(rel)
        elif kind == "dir":
            over.add_dir(rel)
        elif kind == "file":
            over.add_file(rel, "d", 0)
        else:
            over.add_link(rel, target)


def _really(root: Path) -> None:
    """The restores made for real, in the oracle's copy."""
    for kind, rel, target in OPS:
        p = root / rel
        if kind == "remove":
            p.unlink()
        elif kind == "dir":
            p.mkdir(parents=True)
        elif kind == "file":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, p)


# (not crossed by a pattern: a link below its base between the disk and what is pretended,
# data/cur and alias; see Discovery._merged)
SPECS = [["glob", ".", "*", {}], ["glob", ".", "*/*.txt", {}], ["glob", "build", "*", {}],
         ["glob", "build", "**", {"recursive": True}], ["glob", "build", "*/*", {}],
         ["path.rglob", "build", "*", {}], ["path.glob", "build/top", "*.txt", {}],
         ["glob", "data/cur", "*.txt", {}], ["glob", "notes", "*", {}], ["glob", "ext", "*", {}],
         ["glob", "alias/d", "**", {"recursive": True, "include_hidden": True}],
         ["glob", "gen", "**/*", {"recursive": True}], ["glob", "raw", "*", {}]]
LISTED = [".", "build", "build/d", "build/d/sub", "build/d/e", "build/top", "notes", "data",
          "data/cur", "ext", "alias/d", "gen/deep", "nowhere", "raw"]


@pytest.fixture
def pretended(tmp_path: Path) -> Iterator[Tuple[Discovery, Path]]:
    """A Discovery over the project with OPS pretended, and a copy where they are made."""
    root = _project(tmp_path)
    after = tmp_path / "after"
    shutil.copytree(root, after, symlinks=True)
    _really(after)
    d = Discovery(str(root), StatCache(), store=".zenbuild")
    d.overlay = OutputOverlay()
    _pretend(d.overlay)
    yield d, after
    d.close()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s[0]}:{s[1]}:{s[2]}")
def test_a_pattern_finds_what_the_restores_would_leave(tmp_path: Path, pretended, spec) -> None:
    d, after = pretended
    root = tmp_path / "project"
    before = sorted(str(p) for p in root.rglob("*"))
    got = d.glob_digest(spec)
    assert got == glob_digest(str(after), spec, skipped(str(after), ".zenbuild"))
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written in the project
    assert sorted(os.listdir(tmp_path / "outside")) == ["o.txt"]  # nor through a link


@pytest.mark.parametrize("rel", LISTED)
def test_a_listing_finds_what_the_restores_would_leave(pretended, rel: str) -> None:
    d, after = pretended
    assert d.list_digest(rel) == listing_digest(str(after), rel)


def test_the_mirror_never_writes_through_a_link_leaving_the_project(tmp_path: Path) -> None:
    # a restore pretended under a link to outside: the mirror made the link to the real place
    # and then wrote (and cleared folders) through it
    root = tmp_path / "project"
    root.mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "b.txt").write_text("my edit")
    (tmp_path / "scratch" / "g").mkdir()
    (tmp_path / "scratch" / "g" / "notes.txt").write_text("mine")
    os.symlink(str(tmp_path / "scratch"), root / "build")
    d = Discovery(str(root), StatCache(), store=".zenbuild")
    d.overlay = OutputOverlay()
    d.list_digest(".")
    d.overlay.add_link("lnk", "../scratch")
    d.overlay.add_file("lnk/b.txt", "d", 0)
    d.overlay.remove("lnk/g/notes.txt")
    d.overlay.add_dir("lnk/g/new")
    d.overlay.add_file("build/b.txt", "d", 0)
    d.overlay.remove("build/g/notes.txt")
    d.overlay.add_dir("build/g")
    for rel in (".", "build", "lnk", "build/g", "lnk/g"):
        d.list_digest(rel)
        d.glob_digest(["glob", rel, "**", {"recursive": True}])
    d.close()
    assert (tmp_path / "scratch" / "b.txt").read_text() == "my edit"
    assert (tmp_path / "scratch" / "g" / "notes.txt").read_text() == "mine"


def test_the_mirror_holds_only_what_is_pretended(tmp_path: Path) -> None:
    # it was a copy of every name under the folder listed: a 100,000-file project took
    # seconds per dry run
    root = _project(tmp_path)
    for i in range(50):
        (root / "data" / f"f{i}.txt").write_text("")
    d = Discovery(str(root), StatCache(), store=".zenbuild")
    d.overlay = OutputOverlay()
    _pretend(d.overlay)
    d.glob_digest(["glob", ".", "**", {"recursive": True}])
    mirrored = {p.relative_to(d._mirror.into).as_posix()
                for p in Path(d._mirror.into).rglob("*")}
    pretended = {rel for kind, rel, _ in OPS if kind != "remove"}
    above = {"/".join(p.split("/")[:i]) for p in pretended for i in range(1, p.count("/") + 1)}
    d.close()
    assert mirrored == pretended | above


def test_under_a_link_replaced_by_a_folder_nothing_of_the_disk_is_left(tmp_path: Path) -> None:
    # the plan removes the user's link build/g, then makes the folder and its files: what
    # lies behind the link is not in the restored folder
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "x.txt").write_text("theirs")
    (tmp_path / "build").mkdir()
    os.symlink("../theirs", tmp_path / "build" / "g")
    over = OutputOverlay()
    over.remove("build/g")
    over.add_dir("build/g")
    over.add_file("build/g/a.txt", "da", 1)
    root = str(tmp_path)
    assert over.where(root, "build/g/a.txt") == (("da", 1), None)
    assert over.where(root, "build/g/x.txt") == (None, None)
    assert over.canonical(root, "build/g") == "build/g"
