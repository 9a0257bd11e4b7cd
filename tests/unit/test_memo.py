"""Unit: zenbuild.trace.memo. Reads made inside memo-capable project code are remembered per
process and root and added to a later recording that runs that code or hits its lru cache; a
plain helper's reads are not; a remembered file modified since the memo read it moves the
trace's start back to that read (the commit keeps such a result uncached)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from zenbuild.trace import Recorder, Trace, TraceOptions, memo

CFG = '''
import functools, json, os

_CACHE = {}

@functools.lru_cache(maxsize=None)
def config():
    with open("conf.json") as f:
        return json.load(f)

def lazy():
    if "v" not in _CACHE:
        with open("lazy.txt") as f:
            _CACHE["v"] = f.read()
        _CACHE["d"] = os.environ.get("MEMO_DEVICE", "cpu")
    return _CACHE["v"], _CACHE["d"]

def plain(path):
    with open(path) as f:
        return f.read()
'''


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "conf.json").write_text('{"lr": 0.1}')
    (root / "lazy.txt").write_text("v1")
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    name = f"memo_cfg_{abs(hash(str(tmp_path)))}"
    (root / f"{name}.py").write_text(CFG)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("MEMO_DEVICE", "cuda")
    mod = importlib.import_module(name)
    yield mod
    sys.modules.pop(name, None)
    memo.forget()


def rec(mod: Any, body: Any, root: str = "", **kw: Any) -> Trace:
    root = root or os.path.dirname(mod.__file__)
    with Recorder(TraceOptions(root, store_dir=os.path.join(root, ".zenbuild"),
                               trace_calls=True, **kw)) as r:
        body()
    assert r.trace is not None
    return r.trace


def test_an_lru_hit_gets_the_reads_of_the_call_that_filled_it(cfg: Any) -> None:
    assert rec(cfg, cfg.config).reads == ["conf.json"]
    assert cfg.config.cache_info().hits == 0
    second = rec(cfg, cfg.config)  # a hit: no Python code of config runs
    assert cfg.config.cache_info().hits == 1
    assert second.reads == ["conf.json"]


def test_an_lru_hit_is_seen_without_call_tracing(cfg: Any) -> None:
    rec(cfg, cfg.config)
    root = os.path.dirname(cfg.__file__)
    with Recorder(TraceOptions(root, trace_calls=False)) as r:
        cfg.config()
    assert r.trace is not None and r.trace.reads == ["conf.json"]


def test_a_lazy_global_cache_gives_its_reads_and_env_to_later_callers(cfg: Any) -> None:
    first = rec(cfg, cfg.lazy)
    assert first.reads == ["lazy.txt"] and first.env == {"MEMO_DEVICE": "cuda"}
    second = rec(cfg, cfg.lazy)
    assert second.reads == ["lazy.txt"] and second.env == {"MEMO_DEVICE": "cuda"}


def test_a_plain_helper_keeps_each_callers_own_reads(cfg: Any) -> None:
    assert rec(cfg, lambda: cfg.plain("a.txt")).reads == ["a.txt"]
    assert rec(cfg, lambda: cfg.plain("b.txt")).reads == ["b.txt"]


def test_a_recording_that_does_not_use_the_memo_gets_nothing(cfg: Any) -> None:
    rec(cfg, cfg.lazy)
    assert rec(cfg, lambda: None).reads == []


def test_remembered_reads_are_kept_per_root(cfg: Any, tmp_path: Path) -> None:
    rec(cfg, cfg.lazy)
    other = tmp_path / "other"
    other.mkdir()
    assert rec(cfg, cfg.lazy, root=str(other)).reads == []


def test_a_file_modified_since_the_memo_read_it_moves_the_start_back(cfg: Any) -> None:
    first = rec(cfg, cfg.lazy)
    later = rec(cfg, cfg.lazy)
    assert later.started_ns > first.started_ns  # unchanged file: the step's own start
    path = Path(cfg.__file__).parent / "lazy.txt"
    path.write_text("v2")  # the memo still holds v1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, later.started_ns + 1))
    stale = rec(cfg, cfg.lazy)
    assert stale.reads == ["lazy.txt"]
    assert first.started_ns <= stale.started_ns < later.started_ns  # the memo's read


EXT = '''
SEEN = []

def log_and_read(path):  # names a global list: memo-capable, like a step that logs its calls
    SEEN.append(path)
    with open(path) as f:
        return f.read()
'''


def test_memo_capable_code_outside_the_project_gives_later_callers_nothing(
        cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code outside the root (a test module, a sibling checkout on sys.path) is no project's:
    3.11's call tracer never lists it, and 3.12's, which records any code that is not a
    library's, gave every later call the reads of all earlier ones (a rerun too many)."""
    ext = tmp_path / "ext"
    ext.mkdir()
    name = f"memo_ext_{abs(hash(str(tmp_path)))}"
    (ext / f"{name}.py").write_text(EXT)
    monkeypatch.syspath_prepend(str(ext))
    mod = importlib.import_module(name)
    try:
        assert rec(cfg, lambda: mod.log_and_read("a.txt")).reads == ["a.txt"]
        assert rec(cfg, lambda: mod.log_and_read("b.txt")).reads == ["b.txt"]
    finally:
        sys.modules.pop(name, None)
