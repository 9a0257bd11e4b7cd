"""Unit: listings through a pattern (zenbuild.trace.globs): what a glob call records, that the
listings it makes are not recorded as listings of everything, that a recorded spec evaluates
to what the call returned, and how discovered.py keeps and verifies it."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import zenbuild.trace as trace
from zenbuild import discovered as dv
from zenbuild import reasons as R
from zenbuild.trace import Recorder, Trace, TraceOptions
from zenbuild.trace import globs as G


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    for rel in ("data/a.csv", "data/b.txt", "data/.h.csv", "data/sub/c.csv", "data/sub/d.txt",
                "data/.hid/e.csv", "other/x.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    monkeypatch.chdir(root)
    yield root
    assert not trace._ACTIVE and not trace._QUIET
    assert glob.glob is G._ORIG_GLOB and Path.glob is G._ORIG_PATH_GLOB  # put back


def record(root: Path, fn: Any) -> Trace:
    with Recorder(TraceOptions(str(root), str(root / ".zenbuild"))) as r:
        fn()
    assert r.trace is not None
    return r.trace


CALLS = [  # (call, the spec it records)
    (lambda: glob.glob("data/*.csv"), ["glob", "data", "*.csv", {}]),
    (lambda: list(glob.iglob("data/**/*.csv", recursive=True)),
     ["glob", "data", "**/*.csv", {"recursive": True}]),
    (lambda: glob.glob("*", root_dir="data", include_hidden=True),
     ["glob", "data", "*", {"include_hidden": True}]),
    (lambda: glob.glob("*/*.csv"), ["glob", ".", "*/*.csv", {}]),
    (lambda: glob.glob(os.path.abspath("data") + "/s*/*.csv"), ["glob", "data", "s*/*.csv", {}]),
    (lambda: glob.glob("data/sub/c.csv"), ["glob", "data/sub", "c.csv", {}]),
    (lambda: glob.glob("./data//*.txt"), ["glob", "data", "*.txt", {}]),
    (lambda: sorted(Path("data").glob("*.csv")), ["path.glob", "data", "*.csv", {}]),
    (lambda: next(Path("data").rglob("*.csv")), ["path.rglob", "data", "*.csv", {}]),
    (lambda: list(Path(".").glob("**")), ["path.glob", ".", "**", {}]),
]


# glob's include_hidden is Python 3.11's: 3.10's glob() rejects it, with or without zenbuild
NEEDS_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="include_hidden is 3.11+")


@pytest.mark.parametrize("n", [pytest.param(n, marks=NEEDS_311)
                               if "include_hidden" in CALLS[n][1][3] else n
                               for n in range(len(CALLS))])
def test_a_glob_is_recorded_as_its_pattern_not_as_listings(proj: Path, n: int) -> None:
    call, spec = CALLS[n]
    t = record(proj, call)
    assert [g[:4] for g in t.globs] == [spec]
    skip = G.skipped(str(proj), str(proj / ".zenbuild"))
    assert t.globs[0][4] == G.digest(str(proj), spec, skip)  # taken when the call was made
    assert t.listed == []  # the folders it looked into are covered by the pattern
    assert G.valid(spec)


def test_listings_of_everything_stay_listings(proj: Path) -> None:
    import fnmatch

    def step() -> None:
        fnmatch.filter(os.listdir("data"), "*.csv")
        list(os.scandir("other"))
        list(Path("data/sub").iterdir())
        list(os.walk("data/.hid"))

    t = record(proj, step)
    assert t.globs == [] and t.listed == ["data", "data/.hid", "data/sub", "other"]


def test_what_cannot_be_evaluated_again_is_left_to_the_listings(proj: Path) -> None:
    fd = os.open("data", os.O_RDONLY)
    try:
        t = record(proj, lambda: (glob.glob(b"data/*.csv"), glob.glob("*.csv", dir_fd=fd),
                                  glob.glob("data/../other/*.csv"), glob.glob("data/*/../*.txt"),
                                  list(Path("data/../other").glob("*"))))
    finally:
        os.close(fd)
    assert t.globs == []
    assert {"data", "other"} <= set(t.listed)  # the listings it made: never nothing


def test_a_glob_outside_a_recording_or_outside_the_root_records_nothing(proj: Path,
                                                                         tmp_path: Path) -> None:
    assert glob.glob is G._ORIG_GLOB
    t = record(proj, lambda: (glob.glob(str(tmp_path) + "/*"), list(tmp_path.glob("*"))))
    assert t.globs == [] and t.listed == []


def test_a_lazy_glob_left_half_read_is_still_quiet_and_the_spec_kept(proj: Path) -> None:
    def step() -> None:
        it = Path("data").glob("**/*.csv")
        next(it)
        os.listdir("other")  # between two steps of the lazy glob: a listing of its own

    t = record(proj, step)
    assert [g[:4] for g in t.globs] == [["path.glob", "data", "**/*.csv", {}]]
    assert t.listed == ["other"]


def test_the_digest_is_the_folder_before_the_step_looked(proj: Path) -> None:
    """A matching file that appears while the step runs, after its glob, must not be taken for
    one the step saw: the record keeps the matches of when the call was made."""
    spec = ["glob", "data", "*.csv", {}]
    before = G.digest(str(proj), spec)

    def step() -> None:
        glob.glob("data/*.csv")
        (proj / "data" / "late.csv").write_text("x")
        glob.glob("data/*.csv")  # the same pattern again: the first digest stands

    t = record(proj, step)
    assert t.globs == [[*spec, before]]
    rec = dv.build(t, lambda rel: None, lambda *a: None, lambda rel: None,
                   glob_digest=lambda s: G.digest(str(proj), s))
    (got,) = dv.verify(rec, lambda rel: None, {}, lambda *a: None,
                       glob_digest=lambda s: G.digest(str(proj), s))
    assert got.kind == R.GLOB_MATCHES_CHANGED


EVALUATED = [
    ("data/*.csv", {}), ("data/*", {}), ("data/*", {"include_hidden": True}),
    ("data/**/*.csv", {"recursive": True}), ("data/**", {"recursive": True}),
    ("data/**/*.csv", {}), ("*/*.csv", {}), ("data/sub/c.csv", {}), ("data/none.csv", {}),
    ("data/*/", {}),
]


@pytest.mark.parametrize("pattern, kw", [pytest.param(p, kw, marks=NEEDS_311)
                                         if "include_hidden" in kw else (p, kw)
                                         for p, kw in EVALUATED])
def test_a_glob_spec_evaluates_to_what_the_call_returned(proj: Path, pattern: str,
                                                         kw: Any) -> None:
    spec = G.glob_spec(trace_rel(proj), pattern, (), kw)
    assert spec is not None
    base = "" if spec[1] == "." else spec[1] + "/"
    got = G.names(str(proj), spec)
    assert got is not None
    want = sorted(x[len(base):] for x in glob.glob(pattern, **kw) if x != base)
    assert [x for x in got if x != "."] == want


@pytest.mark.parametrize("method, pattern", [
    ("glob", "*"), ("glob", "**/*.csv"), ("rglob", "*.csv"), ("glob", "*/"), ("glob", "**"),
])
def test_a_path_spec_evaluates_to_what_the_call_returned(proj: Path, method: str,
                                                         pattern: str) -> None:
    spec = G.path_spec(trace_rel(proj), f"path.{method}", Path("data"), pattern, (), {})
    assert spec is not None
    want = sorted(os.path.relpath(p, "data") for p in getattr(Path("data"), method)(pattern))
    assert G.names(str(proj), spec) == want


def test_the_digest_tells_a_missing_folder_from_an_empty_one(proj: Path) -> None:
    spec = ["glob", "new", "**", {"recursive": True}]
    assert G.digest(str(proj), spec) is None
    (proj / "new").mkdir()
    assert G.digest(str(proj), spec) is not None


def trace_rel(root: Path) -> Any:
    """What a recording's rel() does, for specs made outside one."""
    def rel(path: Any) -> Any:
        full = os.path.normpath(os.path.join(os.getcwd(), os.fspath(path)))
        if full == str(root):
            return "."
        return full[len(str(root)) + 1:] if full.startswith(str(root) + os.sep) else None
    return rel


# -- the record ---------------------------------------------------------------------------------


def built(root: Path, specs: List[Any]) -> Any:
    t = Trace(globs=specs)
    return dv.build(t, lambda rel: None, lambda *a: None, lambda rel: None,
                    glob_digest=lambda s: G.digest(str(root), s))


def test_a_record_with_patterns_is_format_2_and_verifies_their_matches(proj: Path) -> None:
    spec = ["glob", "data", "*.csv", {}]
    rec = built(proj, [spec])
    assert rec["format"] == 2 and rec["globs"][0][:4] == spec
    assert dv.malformed(rec) is None

    def check() -> List[Any]:
        return dv.verify(rec, lambda rel: None, {}, lambda *a: None,
                         glob_digest=lambda s: G.digest(str(proj), s))

    assert check() == []
    (proj / "data" / "notes.txt").write_text("x")
    (proj / "data" / ".hidden.csv").write_text("x")  # glob's * skips hidden names
    assert check() == []
    (proj / "data" / "new.csv").write_text("x")
    (got,) = check()
    assert (got.kind, got.subject) == (R.GLOB_MATCHES_CHANGED, "data/*.csv")
    assert R.text(got) == "listed by the step: the matches of data/*.csv changed"
    # a verifier that cannot evaluate patterns must not serve the entry
    (no,) = dv.verify(rec, lambda rel: None, {}, lambda *a: None)
    assert no.kind == R.RECORD_UNREADABLE
    # every record this version writes is format 2 (closures, patterns, modules: one format)
    assert built(proj, [])["format"] == 2


@pytest.mark.parametrize("bad", [
    ["glob", "/etc", "*", {}], ["glob", "../x", "*", {}], ["glob", "data", "../*", {}],
    ["glob", "data", "/abs/*", {}], ["glob", "data", "", {}], ["sh", "data", "*", {}],
    ["glob", "data", "*", {"root_dir": True}], ["glob", "data", "*", {"recursive": "yes"}],
    ["path.glob", "data", "*", {"recursive": True}], ["glob", "data/", "*", {}],
    ["glob", "data", "*"],
])
def test_a_stored_pattern_that_leaves_the_project_or_is_unknown_is_refused(bad: Any) -> None:
    rec = {"format": 2, "globs": [[*bad, None]]}
    assert dv.malformed(rec) is not None
    (r,) = dv.verify(rec, lambda rel: None, {}, lambda *a: None, glob_digest=lambda s: None)
    assert r.kind == R.RECORD_UNREADABLE


def test_format_1_never_had_patterns() -> None:
    good = ["glob", "data", "*.csv", {}, None]
    assert dv.malformed({"format": 1, "globs": [good]}) is not None
    assert dv.malformed({"format": 1}) is None  # an old record without calls reads as it was
    assert dv.malformed({"format": 2}) is None
    assert dv.malformed({"format": 2, "globs": [good]}) is None


def test_the_store_caches_and_virtualenvs_are_never_matches(proj: Path) -> None:
    spec = ["path.glob", ".", "**/*", {}]
    skip = G.skipped(str(proj), str(proj / ".zenbuild"))
    assert skip == (".zenbuild",)
    before = G.digest(str(proj), spec, skip)
    for rel in (".zenbuild/blobs/ab/cd", "data/__pycache__/m.cpython-311.pyc", ".venv/lib/x.py",
                "data/x.zenbuild-tmp-1"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text("x")
    assert G.digest(str(proj), spec, skip) == before
    (proj / "data" / "new.txt").write_text("x")
    assert G.digest(str(proj), spec, skip) != before
    assert G.skipped(str(proj), str(proj.parent / "elsewhere")) == ()


def test_a_listing_of_everything_is_digested_before_the_step_looked(proj: Path) -> None:
    """As for a pattern: a name that appears while the step runs, after it listed the folder,
    is a change (before, the digest was taken when the step had ended, and counted it seen)."""
    before = dv.listing_digest(str(proj), "data")

    def step() -> None:
        os.listdir("data")
        (proj / "data" / "late.txt").write_text("x")
        list(os.scandir("data"))

    t = record(proj, step)
    assert t.listed == ["data"] and t.listed_at == {"data": before}
    rec = dv.build(t, lambda rel: None, lambda *a: None,
                   lambda rel: dv.listing_digest(str(proj), rel))
    assert rec["listed"] == {"data": before}
    (got,) = dv.verify(rec, lambda rel: None, {}, lambda *a: None,
                       lambda rel: dv.listing_digest(str(proj), rel))
    assert (got.kind, got.subject) == (R.LISTED_DIR_CHANGED, "data")
