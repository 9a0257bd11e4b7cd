"""End-to-end: files a step hands to native readers without declaring them (pyarrow's C++ file
system, polars' Rust readers, SQLite) are reads, as if the step had opened them: editing one
reruns exactly the steps that read it (explain names the file), a new file in a dataset folder
or glob reruns its readers, and an unchanged project is served. Without zenbuild.trace.native
these steps were served stale."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Dict

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from tests.conftest import Project

# the readers are imported the ways users import them: modules, and names taken at import time
PYARROW_PIPE = '''
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow.parquet import read_table
from zenbuild import pipeline, step
from ticker import tick


@step
def pq_file() -> int:
    tick("pq_file")
    return sum(read_table("data/x.parquet").column("a").to_pylist())


@step
def pq_meta() -> int:
    tick("pq_meta")
    return pq.read_metadata("file://" + __import__("os").path.abspath("data/x.parquet")).num_rows


@step
def pd_dir() -> int:
    tick("pd_dir")
    return int(pd.read_parquet("data/parts")["a"].sum())


@step
def ds_dir() -> int:
    tick("ds_dir")
    return ds.dataset("data/parts").to_table().num_rows


@step
def ds_list() -> int:
    tick("ds_list")
    return ds.dataset(["data/parts/p1.parquet"]).to_table().num_rows


@pipeline
def p():
    pq_file()
    pq_meta()
    pd_dir()
    ds_dir()
    ds_list()
'''

POLARS_PIPE = '''
import polars as pl
from polars import read_csv
from zenbuild import pipeline, step
from ticker import tick


@step
def pl_parquet() -> int:
    tick("pl_parquet")
    return int(pl.read_parquet("data/x.parquet")["a"].sum())


@step
def pl_csv() -> int:
    tick("pl_csv")
    return int(read_csv("data/x.csv")["a"].sum())


@step
def pl_scan_csv() -> int:
    tick("pl_scan_csv")
    return int(pl.scan_csv("data/x.csv").collect()["a"].sum())


@step
def pl_ipc() -> int:
    tick("pl_ipc")
    return int(pl.read_ipc("data/x.arrow")["a"].sum())


@step
def pl_glob() -> int:
    tick("pl_glob")
    return int(pl.scan_parquet("data/parts/*.parquet").collect()["a"].sum())


@step
def pl_dir() -> int:
    tick("pl_dir")
    return pl.read_parquet("data/parts").height


@pipeline
def p():
    pl_parquet()
    pl_csv()
    pl_scan_csv()
    pl_ipc()
    pl_glob()
    pl_dir()
'''

SQLITE_PIPE = '''
import sqlite3
from pathlib import Path
from zenbuild import pipeline, step
from ticker import tick


@step
def rows() -> int:
    tick("rows")
    db = sqlite3.connect(Path("data/db.sqlite"))
    try:
        return db.execute("select sum(a) from t").fetchone()[0]
    finally:
        db.close()


@step
def ro() -> int:
    tick("ro")
    db = sqlite3.connect("file:data/db.sqlite?mode=ro", uri=True)
    try:
        return db.execute("select count(*) from t").fetchone()[0]
    finally:
        db.close()


@pipeline
def p():
    rows()
    ro()
'''


def parquet(path: Path, values: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": values}), str(path))


def arrow(path: Path, values: Any) -> None:
    table = pa.table({"a": values})
    with pa.OSFile(str(path), "wb") as f, ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def setup(project: Project, pipe: str) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", pipe)
    root = project.root
    parquet(root / "data" / "x.parquet", [1, 2, 3])
    parquet(root / "data" / "parts" / "p1.parquet", [1, 2])
    parquet(root / "data" / "parts" / "p2.parquet", [3])
    project.write("data/x.csv", "a\n1\n2\n")
    arrow(root / "data" / "x.arrow", [5, 6])
    return project


def settled(project: Project, steps: int) -> None:
    r = project.cli("run")
    assert len(project.ticks()) == steps, r
    r = project.cli("run")
    assert project.ticks() == [] and r.executed == [], r


def reran(project: Project) -> Dict[str, int]:
    r = project.cli("run")
    ticks = project.ticks()
    return {t: ticks.count(t) for t in ticks} if r.returncode == 0 else {"failed": 1}


def test_pyarrow_readers_rerun_when_their_file_or_folder_changes(project: Project) -> None:
    setup(project, PYARROW_PIPE)
    settled(project, 5)
    parquet(project.root / "data" / "x.parquet", [1, 2, 4, 8])
    r = project.cli("explain", "pq_file")
    assert "read by the step, not declared: data/x.parquet changed" in r.stdout, r
    assert reran(project) == {"pq_file": 1, "pq_meta": 1}
    parquet(project.root / "data" / "parts" / "p2.parquet", [3, 4])
    assert reran(project) == {"pd_dir": 1, "ds_dir": 1}  # ds_list reads p1 only
    parquet(project.root / "data" / "parts" / "p3.parquet", [5])  # a new file in the folder
    r = project.cli("explain", "ds_dir")
    assert "listed by the step: folder data/parts changed" in r.stdout, r
    assert reran(project) == {"pd_dir": 1, "ds_dir": 1}
    parquet(project.root / "data" / "parts" / "p1.parquet", [7])
    assert reran(project) == {"pd_dir": 1, "ds_dir": 1, "ds_list": 1}
    r = project.cli("run")
    assert project.ticks() == [] and r.executed == [], r


def test_polars_readers_rerun_when_their_file_folder_or_glob_changes(project: Project) -> None:
    setup(project, POLARS_PIPE)
    settled(project, 6)
    parquet(project.root / "data" / "x.parquet", [9])
    assert reran(project) == {"pl_parquet": 1}
    project.write("data/x.csv", "a\n1\n5\n")
    r = project.cli("explain", "pl_csv")
    assert "read by the step, not declared: data/x.csv changed" in r.stdout, r
    assert reran(project) == {"pl_csv": 1, "pl_scan_csv": 1}
    arrow(project.root / "data" / "x.arrow", [7, 7])
    assert reran(project) == {"pl_ipc": 1}
    parquet(project.root / "data" / "parts" / "p2.parquet", [30])
    assert reran(project) == {"pl_glob": 1, "pl_dir": 1}
    parquet(project.root / "data" / "parts" / "p3.parquet", [40])  # a new match of the glob
    r = project.cli("explain", "pl_glob")
    assert "listed by the step: folder data/parts changed" in r.stdout, r
    assert reran(project) == {"pl_glob": 1, "pl_dir": 1}
    r = project.cli("run")
    assert project.ticks() == [] and r.executed == [], r


def make_db(path: Path, values: Any, wal: bool = False) -> None:
    db = sqlite3.connect(path)
    try:
        if wal:
            db.execute("pragma journal_mode=wal")
        with db:
            db.execute("create table if not exists t(a)")
            db.execute("delete from t")
            db.executemany("insert into t values (?)", [(v,) for v in values])
    finally:
        db.close()


def test_a_sqlite_database_a_step_reads_reruns_it_when_changed(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", SQLITE_PIPE)
    (project.root / "data").mkdir()
    db = project.root / "data" / "db.sqlite"
    make_db(db, [1, 2], wal=True)  # WAL: the -wal and -shm files come and go as steps read
    settled(project, 2)
    r = project.cli("run")  # no endless reruns from the database's siblings
    assert project.ticks() == [] and r.executed == [], r
    make_db(db, [1, 2, 3], wal=True)
    r = project.cli("explain", "rows")
    assert "read by the step, not declared: data/db.sqlite changed" in r.stdout, r
    assert reran(project) == {"rows": 1, "ro": 1}
    r = project.cli("run")
    assert project.ticks() == [] and r.executed == [], r
    make_db(db, [4], wal=True)  # in -j workers the same
    r = project.cli("run", "-j", "2")
    assert sorted(project.ticks()) == ["ro", "rows"], r
    r = project.cli("run", "-j", "2")
    assert project.ticks() == [] and r.executed == [], r


WRITER_PIPE = '''
import sqlite3
from zenbuild import pipeline, step
from ticker import tick


@step
def log(n: int) -> int:
    tick("log")
    db = sqlite3.connect("data/runs.sqlite")  # a tracking store (mlflow, optuna) it logs to
    try:
        with db:
            db.execute("create table if not exists runs(n)")
            db.execute("insert into runs values (?)", (n,))
        return n
    finally:
        db.close()


@step
def report(n: int) -> int:
    tick("report")
    db = sqlite3.connect("file:data/runs.sqlite?mode=ro", uri=True)
    try:
        return db.execute("select count(*) from runs").fetchone()[0] + 0 * n
    finally:
        db.close()


@pipeline
def p(n: int = 1):
    report(log(n))
'''


def test_a_step_that_writes_to_a_database_logs_to_it_and_is_cached(project: Project) -> None:
    """A database the step changed is its write, not its input (a tracking store it logs to):
    the step is cached and warned about as an undeclared write, instead of counting as an
    input changed while it ran and running every time. A step that only reads the database
    still reruns when it changes."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", WRITER_PIPE)
    (project.root / "data").mkdir()
    r = project.cli("run")
    assert project.ticks() == ["log", "report"], r
    assert "data/runs.sqlite" in r.output and "not cached" not in r.output, r
    r = project.cli("run")
    assert project.ticks() == [] and r.executed == [], r
    r = project.cli("run", "--param", "n=2")  # log executes again: report sees two rows
    assert project.ticks() == ["log", "report"], r
    assert r.returncode == 0, r
    db = sqlite3.connect(project.root / "data" / "runs.sqlite")
    try:
        assert db.execute("select count(*) from runs").fetchone()[0] == 2
        with db:
            db.execute("insert into runs values (3)")  # someone else writes to it
    finally:
        db.close()
    r = project.cli("run", "--param", "n=2")
    assert project.ticks() == ["report"], r  # the reader reruns; the logger is served
