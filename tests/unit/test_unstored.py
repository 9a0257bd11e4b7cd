"""Unit: STORE/unstored (store/unstored.py) is pruned of the lines that can never match again
(a file rewritten or gone since, a path named again later), atomically, and an append made
while a prune rewrites the file is not lost."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

from zenbuild.store import unstored as unstored_mod
from zenbuild.store.db import Store
from zenbuild.store.unstored import Unstored


def _lines(store: Store) -> List[list]:
    path = os.path.join(store.path, "unstored")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _setup(tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    return root, Store(str(tmp_path / "store"))


def test_prune_keeps_what_can_still_match(tmp_path: Path) -> None:
    root, store = _setup(tmp_path)
    for name in ("kept.bin", "rewritten.bin", "gone.bin", "twice.bin"):
        (root / name).write_bytes(b"the step's")
    Unstored(store).add(str(root), ["kept.bin", "rewritten.bin", "gone.bin", "twice.bin"])
    (root / "twice.bin").write_bytes(b"the step's again, longer")
    Unstored(store).add(str(root), ["twice.bin"])  # a second failure: a second line
    (root / "rewritten.bin").write_bytes(b"the user's edit, or a later successful run")
    (root / "gone.bin").unlink()
    with open(os.path.join(store.path, "unstored"), "a") as f:
        f.write('["torn.bin", [1, 2')  # a killed run's last line
    assert len(_lines_raw(store)) == 6
    u = Unstored(store)
    assert u.prune(str(root)) == (2, 4)
    assert [rel for rel, _ in _lines(store)] == ["kept.bin", "twice.bin"]
    fresh = Unstored(store)  # what it says is what it said before the prune
    assert fresh.holds("kept.bin", os.stat(root / "kept.bin"))
    assert fresh.holds("twice.bin", os.stat(root / "twice.bin"))
    assert not fresh.holds("rewritten.bin", os.stat(root / "rewritten.bin"))
    assert os.listdir(store.tmp) == []  # the temp file was renamed into place
    assert Unstored(store).prune(str(root)) == (2, 0)  # nothing to drop: not rewritten
    (root / "kept.bin").unlink()
    (root / "twice.bin").unlink()
    assert Unstored(store).prune(str(root)) == (0, 2)
    assert not os.path.exists(os.path.join(store.path, "unstored"))
    assert Unstored(store).prune(str(root)) == (0, 0)  # no file: nothing to do
    store.close()


def _lines_raw(store: Store) -> List[str]:
    with open(os.path.join(store.path, "unstored"), encoding="utf-8") as f:
        return f.read().splitlines()


def test_an_append_racing_a_prune_lands_in_the_new_file(tmp_path: Path) -> None:
    """The writer opened the file, then a prune replaced it before the writer took the lock:
    the writer sees that the file it opened is no longer the one at the path, opens the new
    one, and appends there (without the check its line would go to the replaced file)."""
    root, store = _setup(tmp_path)
    (root / "old.bin").write_bytes(b"rewritten later")
    (root / "live.bin").write_bytes(b"still the step's")
    Unstored(store).add(str(root), ["old.bin", "live.bin"])
    (root / "old.bin").write_bytes(b"rewritten")
    (root / "new.bin").write_bytes(b"written by the racing run")
    writer = Unstored(store)
    pruned: List[tuple] = []

    def prune_now() -> None:  # between the writer's open and its lock
        if not pruned:
            pruned.append(Unstored(store).prune(str(root)))

    writer.opened = prune_now
    writer.add(str(root), ["new.bin"])
    assert pruned == [(1, 1)]
    assert [rel for rel, _ in _lines(store)] == ["live.bin", "new.bin"]
    store.close()


def test_a_prune_racing_a_prune_reads_the_file_now_in_place(tmp_path: Path) -> None:
    root, store = _setup(tmp_path)
    (root / "a.bin").write_bytes(b"a")
    (root / "b.bin").write_bytes(b"b")
    Unstored(store).add(str(root), ["a.bin", "b.bin", "a.bin"])
    first = Unstored(store)
    inner: List[tuple] = []

    def other_prune() -> None:
        if not inner:
            inner.append(Unstored(store).prune(str(root)))

    first.opened = other_prune
    assert first.prune(str(root)) == (2, 0)  # the other one dropped the repeated line
    assert inner == [(2, 1)]
    assert [rel for rel, _ in _lines(store)] == ["b.bin", "a.bin"]
    store.close()


def test_a_run_prunes_a_big_file_when_it_appends(tmp_path: Path, monkeypatch) -> None:
    root, store = _setup(tmp_path)
    monkeypatch.setattr(unstored_mod, "PRUNE_BYTES", 200)
    out = root / "out.bin"
    for i in range(5):  # five failed runs of the same step, each a new file there
        out.write_bytes(b"x" * (i + 1))
        Unstored(store).add(str(root), ["out.bin"])
    lines = _lines(store)
    assert len(lines) < 5 and lines[-1][0] == "out.bin"
    assert Unstored(store).holds("out.bin", os.stat(out))
    store.close()
