"""Folder Outputs: capture and restore keep modes, empty folders and symlinks (store/folders.py,
store/restoring.py); old manifests restore as before; the remote checks on links; a Dir input's
key sees what the folder holds besides bytes (rebuild.file_digests' shape)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Dict, Tuple

import pytest

from zenbuild import reasons as R
from zenbuild.diffs import diff_components
from zenbuild.digest import StatCache
from zenbuild.errors import StoreError
from zenbuild.graph import FileRef
from zenbuild.rebuild import file_digests
from zenbuild.store.db import Store
from zenbuild.store.folders import SpecialFile, contained, parse
from zenbuild.store.outputs import capture
from zenbuild.store.restoring import plan_restore, restore
from zenbuild.store.signing import restore_problem


def snapshot(folder: Path) -> Dict[str, Tuple[str, str]]:
    out: Dict[str, Tuple[str, str]] = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(folder))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (f"dir {stat.S_IMODE(st.st_mode):o}", "")
            else:
                out[rel] = (f"file {stat.S_IMODE(st.st_mode):o}", p.read_text())
    return out


def make(out: Path) -> None:
    (out / "sub" / "empty").mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "key").write_text("k")
    (out / "key").chmod(0o600)
    (out / "sub" / "tool").write_text("t")
    (out / "sub" / "tool").chmod(0o751)
    (out / "sub" / "ro").write_text("r")
    (out / "sub" / "ro").chmod(0o444)
    (out / "locked").mkdir()
    (out / "locked" / "in.txt").write_text("in")
    (out / "locked").chmod(0o500)
    os.symlink("a.txt", out / "link")
    os.symlink("../sub", out / "sub" / "empty2")  # a link to a folder (a loop, even)
    os.symlink("/nowhere/at/all", out / "abs")  # dangling, absolute


@pytest.fixture
def env(tmp_path: Path):
    old = os.umask(0o022)
    store = Store(str(tmp_path / "st"))
    root = tmp_path / "proj"
    (root / "out").mkdir(parents=True)
    make(root / "out")
    yield store, root
    store.close()
    os.umask(old)
    for dirpath, dirs, _ in os.walk(tmp_path):
        for d in dirs:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), 0o755)


def served(store: Store, root: Path, rec: dict) -> None:
    sc = StatCache()
    todo, problem = plan_restore(str(root), {"out": rec}, store, sc)
    assert problem is None
    restore(str(root), todo, store, sc, say=lambda line: None)


def test_capture_then_restore_into_an_empty_place_is_exact(env) -> None:
    store, root = env
    made = snapshot(root / "out")
    rec = capture(str(root), "out", store, StatCache())
    m = parse(store.get_blob(rec["digest"]))
    assert m.exact and m.links == {"link": "a.txt", "sub/empty2": "../sub", "abs": "/nowhere/at/all"}
    assert m.modes == {"key": 0o600, "sub/tool": 0o751, "sub/ro": 0o444}
    assert m.dirs == {"sub/empty": 0o755, "locked": 0o500}
    other = root.parent / "other"
    other.mkdir()
    served(store, other, rec)
    assert snapshot(other / "out") == made
    sc = StatCache()
    assert plan_restore(str(other), {"out": rec}, store, sc) == ([], None)  # nothing left to do


def test_a_plain_folder_keeps_its_manifest_shape_and_files_only_old_readers_read(env) -> None:
    store, root = env
    plain = root / "plain"
    plain.mkdir()
    (plain / "x").write_text("x")
    rec = capture(str(root), "plain", store, StatCache())
    doc = json.loads(store.get_blob(rec["digest"]))
    assert doc == {"files": [["x", doc["files"][0][1], 1, False]], "format": 2}


def test_an_old_manifest_restores_as_before(env) -> None:
    store, root = env
    digest = store.put_blob(b"data")
    old = store.put_blob(json.dumps({"files": [["f.txt", digest, 4, False],
                                               ["bin/x", digest, 4, True]]}).encode())
    served(store, root, {"kind": "dir", "digest": old, "size": 8})
    got = snapshot(root / "out")
    assert got["f.txt"] == ("file 644", "data") and got["bin/x"] == ("file 755", "data")
    assert "a.txt" not in got and "link" not in got  # files (a link counted as one) removed
    assert got["sub/empty"] == ("dir 755", "")  # folders are left: format 1 did not list them


def test_a_link_planted_after_the_plan_is_never_written_through(env, tmp_path: Path) -> None:
    store, root = env
    rec = capture(str(root), "out", store, StatCache())
    os.chmod(root / "out" / "locked", 0o755)
    (root / "out" / "sub" / "tool").write_text("edited")
    sc = StatCache()
    todo, _ = plan_restore(str(root), {"out": rec}, store, sc)
    victim = tmp_path / "victim"
    victim.mkdir()
    os.rename(root / "out" / "sub", tmp_path / "moved")
    os.symlink(victim, root / "out" / "sub")  # between the plan and the restore
    with pytest.raises(StoreError, match="nothing was written through it"):
        restore(str(root), todo, store, sc, say=lambda line: None)
    assert list(victim.iterdir()) == []


def test_a_special_file_is_refused_with_its_path(env) -> None:
    store, root = env
    os.mkfifo(root / "out" / "sub" / "fifo")
    with pytest.raises(SpecialFile) as e:
        capture(str(root), "out", store, StatCache())
    assert e.value.args == ("out/sub/fifo", "a fifo")


@pytest.mark.parametrize("inner,target,inside", [
    ("a", "b", True), ("a", "./b/c", True), ("d/a", "../b", True), ("d/e/a", "../../b", True),
    ("a", "../b", False), ("d/a", "../../b", False), ("a", "/etc/passwd", False),
    ("a", "b/../c", False),  # a ".." after a name climbs from where that name points
    ("a", "", False), ("d/a", "..", True), ("a", ".", True),
])
def test_which_link_targets_stay_inside(inner: str, target: str, inside: bool) -> None:
    assert contained(inner, target) is inside


def test_remote_checks_on_links_and_entries(env) -> None:
    store, root = env
    rec = capture(str(root), "out", store, StatCache())
    m = json.loads(store.get_blob(rec["digest"]))
    blobs = {f[1]: None for f in m["files"]}

    def problem(doc: dict, trusted: bool = False):
        d = store.put_blob(json.dumps(doc).encode())
        return restore_problem({"out": {"kind": "dir", "digest": d}}, store.get_blob, blobs,
                               None, trusted)

    assert "abs -> '/nowhere/at/all' that points outside" in problem(m)
    assert problem(m, trusted=True) is None
    inside = {**m, "links": {"link": "a.txt"}}
    assert problem(inside) is None
    assert "as a file and a folder" in problem({**inside, "links": {"a.txt/x": "y"}})
    assert "as a file and a folder" in problem({**inside, "links": {"l": "a.txt"},
                                                "dirs": {"l/d": 0o755}})
    assert "incomplete or unsafe" in problem({**inside, "dirs": {"../up": 0o755}})
    assert "unreadable" in problem({**inside, "modes": {"key": 0o4755}})  # no set-uid bits


def shape_of(root: Path) -> Dict[str, list]:
    shapes: Dict[str, list] = {}
    file_digests(str(root), [FileRef("out", "**/*")], StatCache(), None, shapes)
    return shapes


def test_a_dir_inputs_key_sees_modes_links_and_empty_folders(env) -> None:
    store, root = env
    out = root / "out"
    os.chmod(out / "locked", 0o755)
    for p in ("abs", "sub/empty2"):
        os.unlink(out / p)
    first = shape_of(root)["out:**/*"][0]
    steps = [
        lambda: os.chmod(out / "key", 0o640),
        lambda: (os.unlink(out / "link"), os.symlink("sub/ro", out / "link")),
        lambda: os.rmdir(out / "sub" / "empty"),
        lambda: os.symlink("gone", out / "dangling"),
        lambda: os.chmod(out / "locked", 0o700),
    ]
    seen = {first}
    for change in steps:
        change()
        now = shape_of(root)["out:**/*"][0]
        assert now not in seen
        seen.add(now)
    plain = root / "plain"
    plain.mkdir()
    (plain / "x").write_text("x")
    shapes: Dict[str, list] = {}
    files, _ = file_digests(str(root), [FileRef("plain", "**/*")], StatCache(), None, shapes)
    assert shapes == {} and list(files) == ["plain/x"]  # a key of plain files is unchanged
    assert [r.kind for r in diff_components({"shape": {"out:**/*": ["a", 1]}},
                                            {"shape": {}})] == [R.DIR_SHAPE_CHANGED]
