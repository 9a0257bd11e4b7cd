"""Unit tests for imported.py and the source loader's import recording: each project module
keeps the files its own top-level code read (a nested import keeps its own), a step recording
around an import still sees them, and changed_during_run tells an edit from a touch."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from zenbuild import imported
from zenbuild.project import install_source_imports, project_predicate
from zenbuild.reasons import SOURCE_CHANGED_DURING
from zenbuild.trace import Recorder, TraceOptions

OUTER = '''
import os
import zb_inner_mod  # reads inner.json itself
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "outer.txt")) as f:
    OUTER = f.read()
'''
INNER = '''
import json, os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "inner.json")) as f:
    INNER = json.load(f)
'''


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "zb_outer_mod.py").write_text(OUTER)
    (root / "zb_inner_mod.py").write_text(INNER)
    (root / "outer.txt").write_text("o")
    (root / "inner.json").write_text("1")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    importlib.invalidate_caches()
    store = str(root / ".zenbuild")
    install_source_imports(project_predicate(str(root), store), "", str(root), store)
    try:
        yield root
    finally:
        for name in ("zb_outer_mod", "zb_inner_mod"):
            sys.modules.pop(name, None)


def reads_of(root: Path, name: str) -> list:
    return imported.import_reads().get(os.path.realpath(root / name), [])


def test_each_module_keeps_its_own_import_reads(proj: Path) -> None:
    importlib.import_module("zb_outer_mod")
    assert reads_of(proj, "zb_outer_mod.py") == ["outer.txt"]  # not inner.json: innermost
    assert reads_of(proj, "zb_inner_mod.py") == ["inner.json"]
    srcs = imported.imported_sources()
    assert os.path.realpath(proj / "zb_outer_mod.py") in srcs


def test_a_step_recording_around_an_import_sees_the_reads_too(proj: Path) -> None:
    with Recorder(TraceOptions(str(proj), str(proj / ".zenbuild"))) as r:
        importlib.import_module("zb_outer_mod")
    assert r.trace is not None and r.trace.reads == ["inner.json", "outer.txt"]
    assert reads_of(proj, "zb_outer_mod.py") == ["outer.txt"]


def test_changed_during_run_tells_an_edit_from_a_touch(proj: Path) -> None:
    importlib.import_module("zb_outer_mod")
    meta = {"zb_outer_mod.OUTER": ["constant", "zb_outer_mod.py"], "x": ["library object", ""]}
    assert imported.changed_during_run(str(proj), "s", meta) is None
    src = proj / "zb_outer_mod.py"
    os.utime(src, (1, 1))  # same bytes: the stat moved, the digest did not
    assert imported.changed_during_run(str(proj), "s", meta) is None
    src.write_text(OUTER + "\nMORE = 1\n")
    why = imported.changed_during_run(str(proj), "s", meta)
    assert why is not None and why.kind == SOURCE_CHANGED_DURING
    assert why.subject == "zb_outer_mod.py" and why.detail == {"step": "s"}
    # a module whose items the step does not hold is not its business
    assert imported.changed_during_run(str(proj), "s", {"k": ["function", "other.py"]}) is None


def test_a_file_read_at_import_that_changes_during_the_run_is_named(proj: Path) -> None:
    importlib.import_module("zb_outer_mod")
    meta = {"zb_inner_mod.INNER": ["constant", "zb_inner_mod.py"]}
    assert imported.changed_during_run(str(proj), "s", meta) is None
    (proj / "inner.json").write_text("22")
    why = imported.changed_during_run(str(proj), "s", meta)
    assert why is not None and why.subject == "inner.json"
