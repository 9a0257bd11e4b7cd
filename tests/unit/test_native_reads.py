"""Unit: reads by native code (zenbuild.trace.native). The paths given to pyarrow's, polars'
and sqlite3's readers are reads (a file), listings plus reads (a folder, a glob), or a read of
a missing file; writers record nothing; the originals are back when no step records; a reader
module the step imports while it records is wrapped too; nothing is imported for it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import zenbuild.trace as trace
from zenbuild.trace import Recorder, Trace, TraceOptions, native
from zenbuild.trace.native import plain, sqlite_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "proj"
    (root / "data" / "parts" / "k=1").mkdir(parents=True)
    table = pa.table({"a": [1, 2]})
    pq.write_table(table, str(root / "data" / "x.parquet"))
    pq.write_table(table, str(root / "data" / "parts" / "k=1" / "p1.parquet"))
    pq.write_table(table, str(root / "data" / "parts" / "p2.parquet"))
    (root / "data" / "x.csv").write_text("a\n1\n")
    monkeypatch.chdir(root)
    yield root
    assert not trace._ACTIVE
    assert native._users[0] == 0 and not native._patches and native._FINDER not in sys.meta_path


def record(root: Path, body: Any, **kw: Any) -> Trace:
    kw.setdefault("store_dir", str(root / ".zenbuild"))
    with Recorder(TraceOptions(str(root), **kw)) as r:
        body()
    assert r.trace is not None
    return r.trace


def test_path_forms() -> None:
    assert plain("data/x") == "data/x" and plain(Path("data/x")) == "data/x"
    assert plain(b"data/x") == "data/x"
    assert plain("file:///abs/a%20b.parquet") == "/abs/a b.parquet"
    assert plain("file://localhost/abs/x") == "/abs/x"
    assert plain("file://elsewhere/abs/x") is None
    assert plain("s3://bucket/x.parquet") is None and plain("hf://x/y") is None
    with open(os.devnull, "rb") as f:
        assert plain(f) is None and plain(3) is None and plain("") is None


def test_sqlite_database_forms() -> None:
    assert sqlite_path("db.sqlite") == "db.sqlite" and sqlite_path(Path("d/x.db")) == "d/x.db"
    assert sqlite_path(b"x.db") == "x.db"
    for memory in (":memory:", "", "file::memory:?cache=shared", "file:x?mode=memory",
                   "file:/x?vfs=memdb", "file:", "file://otherhost/x.db"):
        assert sqlite_path(memory) is None, memory
    assert sqlite_path("file:data/x.db?mode=ro") == "data/x.db"
    assert sqlite_path("file:///abs/x%3F.db?immutable=1#frag") == "/abs/x?.db"
    assert sqlite_path("file://localhost/abs/x.db") == "/abs/x.db"


def test_pyarrow_files_folders_lists_uris_and_file_systems(proj: Path) -> None:
    assert record(proj, lambda: pq.read_table("data/x.parquet")).reads == ["data/x.parquet"]
    assert record(proj, lambda: pq.ParquetFile(Path("data/x.parquet"))).reads == [
        "data/x.parquet"]
    uri = "file://" + str(proj / "data" / "x.parquet")
    assert record(proj, lambda: pq.read_schema(uri)).reads == ["data/x.parquet"]
    t = record(proj, lambda: ds.dataset("data/parts", partitioning="hive").to_table())
    assert t.reads == ["data/parts/k=1/p1.parquet", "data/parts/p2.parquet"]
    assert t.listed == ["data/parts", "data/parts/k=1"]
    t = record(proj, lambda: ds.dataset(["data/x.parquet", "data/parts/p2.parquet"]))
    assert t.reads == ["data/parts/p2.parquet", "data/x.parquet"] and t.listed == []
    sub = pafs.SubTreeFileSystem(str(proj / "data"), pafs.LocalFileSystem())
    assert record(proj, lambda: pq.read_table("x.parquet", filesystem=sub)).reads == [
        "data/x.parquet"]
    assert record(proj, lambda: pq.read_metadata(
        "data/x.parquet", filesystem=pafs.LocalFileSystem())).reads == ["data/x.parquet"]


def test_a_missing_source_is_a_read_and_the_exception_is_the_librarys(proj: Path) -> None:
    def body() -> None:
        with pytest.raises(FileNotFoundError):
            pq.read_table("data/nope.parquet")
        with pytest.raises(FileNotFoundError):
            ds.dataset(["data/nope2.parquet"])
        with pytest.raises(FileNotFoundError):
            pl.read_csv("data/nope.csv")

    assert record(proj, body).reads == ["data/nope.csv", "data/nope.parquet", "data/nope2.parquet"]


def test_writers_record_no_reads(proj: Path) -> None:
    table = pa.table({"a": [1]})

    def body() -> None:
        pq.write_table(table, "data/w1.parquet")
        ds.write_dataset(table, "data/wds", format="parquet")
        with pq.ParquetWriter("data/w2.parquet", table.schema) as w:
            w.write_table(table)

    t = record(proj, body)
    assert t.reads == [] and t.listed == []


def test_polars_files_folders_and_globs(proj: Path) -> None:
    assert record(proj, lambda: pl.read_parquet("data/x.parquet")).reads == ["data/x.parquet"]
    assert record(proj, lambda: pl.scan_csv(Path("data/x.csv")).collect()).reads == [
        "data/x.csv"]
    t = record(proj, lambda: pl.scan_parquet("data/parts/*.parquet").collect())
    assert t.reads == ["data/parts/p2.parquet"] and t.listed == ["data/parts"]
    t = record(proj, lambda: pl.scan_parquet("data/**/*.parquet").collect())
    assert t.reads == ["data/parts/k=1/p1.parquet", "data/parts/p2.parquet", "data/x.parquet"]
    assert t.listed == ["data", "data/parts", "data/parts/k=1"]
    t = record(proj, lambda: pl.scan_parquet("data/parts/k=*/p1.parquet").collect())
    assert t.reads == ["data/parts/k=1/p1.parquet"] and t.listed == ["data/parts"]
    t = record(proj, lambda: pl.scan_parquet("data/parts"))  # lazy: the path is taken now
    assert t.reads == ["data/parts/k=1/p1.parquet", "data/parts/p2.parquet"]


def test_a_glob_with_no_match_yet_watches_where_it_looked(proj: Path) -> None:
    def body() -> None:
        with pytest.raises(pl.exceptions.ComputeError):  # no files found
            pl.scan_csv("data/later/*.csv").collect()
        with pytest.raises(pl.exceptions.ComputeError):
            pl.scan_csv("data/parts/*/later.csv").collect()

    t = record(proj, body)
    assert t.listed == ["data/later", "data/parts"]  # a missing folder: its appearing counts
    assert t.reads == ["data/parts/k=1/later.csv"]  # tried in the folder that matched


def test_sqlite_connect_is_a_read_and_memory_is_not(proj: Path) -> None:
    db = sqlite3.connect(proj / "data" / "db.sqlite")
    db.execute("create table t(a)")
    db.close()

    def body() -> None:
        for arg, kw in ((proj / "data" / "db.sqlite", {}), (":memory:", {}),
                        ("file:data/db.sqlite?mode=ro", {"uri": True})):
            sqlite3.connect(arg, **kw).close()  # type: ignore[arg-type]

    assert record(proj, body).reads == ["data/db.sqlite"]


def test_the_project_rules_apply(proj: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"a": [1]}), str(outside))
    store = proj / ".zenbuild"
    store.mkdir()
    pq.write_table(pa.table({"a": [1]}), str(store / "s.parquet"))

    def body() -> None:
        pq.read_table(str(outside))
        pq.read_table(str(store / "s.parquet"))
        pl.read_parquet("data/x.parquet")
        pl.read_parquet("data/parts/p2.parquet")

    t = record(proj, body, inputs=frozenset({"data/x.parquet"}), outputs=("data/parts",))
    assert t.reads == [] and t.listed == []
    assert record(proj, body, track_reads=False).reads == []


def test_results_are_the_librarys_and_the_originals_come_back(proj: Path) -> None:
    import polars.io._utils as plu
    import pyarrow.parquet.core as core

    before = (pafs._resolve_filesystem_and_path, core._resolve_filesystem_and_path,
              ds._ensure_multiple_sources, plu.normalize_filepath)
    seen = []

    def body() -> None:
        assert getattr(core._resolve_filesystem_and_path, "__zenbuild_native__", False)
        seen.append(pq.read_table("data/x.parquet").to_pylist())
        seen.append(pl.read_csv("data/x.csv").to_dicts())

    record(proj, body)
    assert seen == [[{"a": 1}, {"a": 2}], [{"a": 1}]]
    assert (pafs._resolve_filesystem_and_path, core._resolve_filesystem_and_path,
            ds._ensure_multiple_sources, plu.normalize_filepath) == before


def run_fresh(root: Path, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out
    return out.stdout.strip()


def test_a_reader_imported_during_the_step_is_wrapped_and_none_is_imported_for_it(
        proj: Path) -> None:
    code = (
        "import os, sys\n"
        "from zenbuild.trace import Recorder, TraceOptions\n"
        "def body():\n"
        "    import polars as pl\n"
        "    from pyarrow.parquet import read_table\n"
        "    pl.read_csv('data/x.csv'); read_table('data/x.parquet')\n"
        "with Recorder(TraceOptions(os.getcwd())) as r:\n"
        "    pass\n"
        "print(any(m.split('.')[0] in ('polars', 'pyarrow') for m in sys.modules))\n"
        "with Recorder(TraceOptions(os.getcwd())) as r:\n"
        "    body()\n"
        "print(r.trace.reads)\n"
        "import polars.io._utils as u, pyarrow.fs as f, pyarrow.parquet.core as c\n"
        "print([hasattr(x, '__zenbuild_native__') for x in (u.normalize_filepath,\n"
        "      f._resolve_filesystem_and_path, c._resolve_filesystem_and_path)],\n"
        "      sys.meta_path[0])\n"
    )
    lines = run_fresh(proj, code).splitlines()
    assert lines[0] == "False"
    assert lines[1] == "['data/x.csv', 'data/x.parquet']"
    # core took the name from pyarrow.fs while it was wrapped: both are put back
    assert lines[2].startswith("[False, False, False]") and "native" not in lines[2]
