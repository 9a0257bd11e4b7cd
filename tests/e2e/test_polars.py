"""End-to-end: a step returns a polars DataFrame (strings, nulls, a categorical, dates). The
store holds it as Arrow buffers out of band; a consumer edited alone re-executes on the frame
mapped from the store while the producer is served from the cache; the producer edited and
run again in another process (another PYTHONHASHSEED) makes the same digest, so its consumer
stays cached (early cutoff); and a cold run in a fresh project gives the same digest."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from tests.conftest import REPO, TICK, Project

PIPE = '''
import datetime as dt
import polars as pl
from zenbuild import pipeline, step
from ticker import tick


@step
def make(n: int):
    tick("make")
    return pl.DataFrame({
        "k": [f"key{i % 7}" for i in range(n)],
        "v": list(range(n)),
        "x": [None if i % 10 == 0 else i * 0.5 for i in range(n)],
        "c": pl.Series([f"c{i % 3}" for i in range(n)], dtype=pl.Categorical),
        "d": [dt.date(2024, 1, 1) + dt.timedelta(days=i % 30) for i in range(n)],
    })


@step
def summarize(df) -> dict:
    tick("summarize")
    by = df.group_by("k").agg(pl.col("v").sum()).sort("k")
    return {"rows": df.height, "v": int(df["v"].sum()), "nulls": df["x"].null_count(),
            "cats": sorted(df["c"].unique().to_list()), "last": str(df["d"].max()),
            "by": dict(zip(by["k"].to_list(), by["v"].to_list()))}


@pipeline
def p(n: int = 200_000):
    summarize(make(n))
'''

N = 200_000

READ = (
    "import json, sys\n"
    "from zenbuild.store.db import Store\n"
    "from zenbuild.serialize import loads\n"
    "s = Store(sys.argv[1], create=False)\n"
    "rows = s.db.execute('SELECT s.step, a.value_digest FROM step_state s JOIN actions a"
    " ON a.fingerprint = s.fingerprint').fetchall()\n"
    "d = dict(rows)\n"
    "blob = bytes(s.map_blob(d['make'])[:4096])\n"
    "print(json.dumps({'digests': d, 'summary': loads(s.map_blob(d['summarize'])),"
    " 'head': blob.decode('latin-1')}))\n"
)


def _stored(project: Project, tmp_path: Path) -> Dict[str, Any]:
    """The value digests of both steps, summarize's stored result and the head of make's
    blob, read from the store in another process."""
    script = tmp_path / "read.py"
    script.write_text(READ)
    out = subprocess.run([sys.executable, str(script), str(project.root / ".zenbuild")],
                         capture_output=True, text=True, check=True, cwd=str(REPO)).stdout
    return json.loads(out)


def _expected(edited: bool = False) -> Dict[str, Any]:
    n = N
    by: Dict[str, int] = {}
    for i in range(n):
        by[f"key{i % 7}"] = by.get(f"key{i % 7}", 0) + i
    want: Dict[str, Any] = {"rows": n, "v": n * (n - 1) // 2, "nulls": n // 10,
                            "cats": ["c0", "c1", "c2"], "last": str(dt.date(2024, 1, 30)),
                            "by": by}
    if edited:
        want["edited"] = True
    return want


def _setup(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["frames:p"]\n')
    project.write("frames.py", PIPE)


def test_a_polars_frame_is_served_from_the_store_and_digests_the_same(project: Project,
                                                                       tmp_path: Path) -> None:
    _setup(project)
    r = project.run("run", env={"PYTHONHASHSEED": "1"})
    assert r.executed == ["make", "summarize"]
    assert project.ticks() == ["make", "summarize"]
    first = _stored(project, tmp_path)
    assert first["summary"] == _expected()
    # stored as the frame's Arrow buffers, out of band (not polars' one-bytes pickle)
    assert first["head"].startswith("ZBO1") and "polars_frame_from_arrow" in first["head"]

    # the consumer edited: it re-executes on the frame mapped from the store
    project.write("frames.py", PIPE.replace('"by": dict(', '"edited": True, "by": dict('))
    r = project.run("run", env={"PYTHONHASHSEED": "2"})
    assert r.executed == ["summarize"] and r.cached == ["make"]
    assert project.ticks() == ["summarize"]
    second = _stored(project, tmp_path)
    assert second["summary"] == _expected(edited=True)
    assert second["digests"]["make"] == first["digests"]["make"]

    # the producer edited (same frame), another process and hash seed: it re-executes and
    # makes the same digest, so the consumer stays cached
    edited = PIPE.replace('"by": dict(', '"edited": True, "by": dict(').replace(
        'tick("make")', 'tick("make")\n    n = int(n)')
    project.write("frames.py", edited)
    r = project.run("run", env={"PYTHONHASHSEED": "3"})
    assert r.executed == ["make"] and r.cached == ["summarize"]
    assert project.ticks() == ["make"]
    assert _stored(project, tmp_path)["digests"] == second["digests"]

    # a cold run of the same pipeline in a fresh project and store, yet another hash seed
    fresh = Project(tmp_path / "fresh")
    fresh.root.mkdir()
    fresh.write("ticker.py", TICK)
    fresh.write("zenbuild.toml", 'pipelines = ["frames:p"]\n')
    shutil.copy(project.root / "frames.py", fresh.root / "frames.py")
    r = fresh.run("run", env={"PYTHONHASHSEED": "4"})
    assert r.executed == ["make", "summarize"]
    assert fresh.ticks() == ["make", "summarize"]
    cold = _stored(fresh, tmp_path)
    assert cold["digests"]["make"] == first["digests"]["make"]
    assert cold["summary"] == _expected(edited=True)

