"""paths.PathMaker (the Paths steps receive) and the per-run path checks built on the same
idea: each gives exactly what the plain, slower call gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zenbuild.errors import PathError
from zenbuild.fingerprint.params import encode_param
from zenbuild.graph import FileRef, OutputRef
from zenbuild.paths import PathMaker
from zenbuild.serialize import canonical
from zenbuild.store.outputs import check_placement

RELS = ["a", "a/b.txt", "data/d049/f49449.txt", ".", "a/./b", ".hidden/x", "a/.h", "a//b",
        "a/", "..", "a/..", "a b/c d", "ünï/cødé.txt"]


@pytest.mark.parametrize("rel", RELS)
def test_path_maker_gives_what_path_gives(tmp_path: Path, rel: str) -> None:
    make = PathMaker(str(tmp_path))
    got, want = make(rel), Path(str(tmp_path) + "/" + rel)
    assert type(got) is type(want)
    assert got == want and str(got) == str(want) and got.parts == want.parts
    assert got.name == want.name and got.parent == want.parent and hash(got) == hash(want)


def test_path_maker_paths_open_the_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("hi")
    p = PathMaker(str(tmp_path) + "/")("d/f.txt")
    assert p.read_text() == "hi" and p.exists() and p.with_suffix(".md").name == "f.md"


class _Cfg:
    pass


def test_encode_param_shallow_list_is_the_canonical_encoding(tmp_path: Path) -> None:
    """The fast path for [File(...), ...] (no config classes to collect) encodes the same bytes
    as the full path; a list holding anything else still collects classes (code_of asked)."""
    root = str(tmp_path)
    value = [FileRef("a.txt"), 3, "x", None, OutputRef("build/o.txt")]
    asked: list = []

    def code_of(cls: type) -> None:
        asked.append(cls)
        return None

    markers = frozenset((FileRef, OutputRef))
    assert encode_param(value, root, code_of) == canonical(value, items=markers,
                                                           roots=(root,))
    assert asked == []
    import dataclasses

    @dataclasses.dataclass
    class Conf:
        n: int = 1

    def code_of2(cls: type) -> str:
        asked.append(cls)
        return "d1"

    data = encode_param([FileRef("a.txt"), Conf()], root, code_of2)
    assert asked == [Conf] and data.endswith(b"=d1")


def test_check_placement_resolves_an_outputs_folder_but_not_the_output(tmp_path: Path) -> None:
    """An Output in a folder that is a symlink into the store is refused (the folder is
    resolved); an Output that is itself a symlink to the store is not (it is never written,
    cleared or restored through: the link is stored as a link)."""
    store = tmp_path / ".zenbuild"
    store.mkdir()
    (tmp_path / "build").mkdir()
    os.symlink(store, tmp_path / "build" / "out")
    os.symlink("..", tmp_path / "build" / "up")
    check_placement(str(tmp_path), str(store), [("s", "build/x.txt"), ("t", "build/out"),
                                                 ("u", "build/up")])
    with pytest.raises(PathError, match="is inside the store"):
        check_placement(str(tmp_path), str(store), [("s", "build/out/x.txt")])
    with pytest.raises(PathError, match="is inside Output"):
        check_placement(str(tmp_path), str(store), [("s", "build/up/.zenbuild")])
    os.symlink(store, tmp_path / "linked")
    with pytest.raises(PathError, match="is inside the store"):
        check_placement(str(tmp_path), str(store), [("s", "build/x.txt"), ("t", "linked/o.txt")])


def test_interactive_file_while_linecache_is_being_imported(monkeypatch) -> None:
    """Python 3.12's call tracing runs its callback for importlib's frozen code while
    linecache itself is being imported (the first `import traceback` after a step failed):
    the half-made module has no `cache` yet. That crashed every run whose step failed."""
    import sys
    import types

    from zenbuild.paths import interactive_file

    half = types.ModuleType("linecache")  # what sys.modules holds mid-import
    monkeypatch.setitem(sys.modules, "linecache", half)
    assert interactive_file("<ipython-input-1-abc>") is False
    assert interactive_file("<frozen importlib._bootstrap>") is False
    half.cache = {"<cell 1>": (3, None, ["x = 1\n"], "<cell 1>")}  # imported: a cell in it
    assert interactive_file("<cell 1>") is True
    assert interactive_file("<frozen importlib._bootstrap>") is False


def test_a_dir_input_naming_a_file_says_so(tmp_path: Path) -> None:
    from zenbuild.paths import MissingInput, dir_files

    (tmp_path / "data.csv").write_text("a\n")
    with pytest.raises(MissingInput, match=r"'data.csv' is a file, not a folder; declare it "
                                           r"with File\('data.csv'\)"):
        dir_files(str(tmp_path), "data.csv", None)
    with pytest.raises(MissingInput, match="input folder 'nothing' does not exist"):
        dir_files(str(tmp_path), "nothing", None)


def test_output_paths_resolve_the_folder_and_keep_the_name(tmp_path):
    from zenbuild.store.outputs import _realpaths

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "via").symlink_to(real)  # the folder itself reached through a symlink
    (real / "to_dir").symlink_to(tmp_path / "elsewhere")
    (real / "up").symlink_to("..")
    names = ["plain.txt", "to_dir", "up", "sub", "absent", ".", ".."]
    for parent in (real, tmp_path / "via"):
        want = [os.path.realpath(os.path.join(parent, n)) if n in (".", "..")
                else os.path.join(os.path.realpath(parent), n) for n in names]
        assert _realpaths(str(parent), names) == want
    assert _realpaths(str(tmp_path / "nowhere"), ["a"]) == [str(tmp_path / "nowhere" / "a")]
