#!/usr/bin/env python3
"""Benchmark issue 13's large values, side by side in one run; prints figures, never gates.

* arrays of 40 MiB, 400 MiB (and 2 GiB with --big): one step makes a float64 array, the
  next sums it. zenbuild cold vs joblib.Memory cold vs a plain script with np.save; then a
  run where only the consumer executes (zenbuild: the sum step edited, the array mapped
  from the store) vs a joblib cache hit + sum vs np.load + sum. Wall time and peak RSS of
  each, every one a fresh child process (its ru_maxrss from os.wait4);
* a 2M-row x 10-column DataFrame: zenbuild store / load vs pickle protocol 5 dump / load to
  the same disk, pyarrow feather beside them, and the digest of the frame in two processes;
* the same shape as a polars DataFrame: zenbuild store / load (as its Arrow table, and as
  polars' own pickle) vs polars write_ipc / read_ipc and pickle protocol 5 (polars installed);
* a 1 GiB output file: zenbuild's capture into the store vs `cp` of it;
* the 400 MiB array pipeline with --executor dask (a LocalCluster the run starts, and one
  already running) beside the in-process run: wall time and the client's own peak RSS.

    .venv/bin/python benchmarks/bench_values.py [--big] [--repeat 3] [--sizes 40,400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from machine import machine  # benchmarks/machine.py (scripts run from this folder)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

PIPE = '''
import numpy as np
from zenbuild import pipeline, step


@step
def make(n: int):
    return np.full(n, 1.5, dtype=np.float64)


@step
def total(a) -> float:
    return float(a.sum())


@pipeline
def p(n: int = {n}):
    total(make(n))
'''

JOBLIB = '''
import sys
import numpy as np
from joblib import Memory

mem = Memory(sys.argv[1], verbose=0)


@mem.cache
def make(n):
    return np.full(n, 1.5, dtype=np.float64)


def total(a):
    return float(a.sum())


print(total(make({n})))
'''

NPSAVE = '''
import sys
import numpy as np
if sys.argv[2] == "save":
    np.save(sys.argv[1], np.full({n}, 1.5, dtype=np.float64))
else:
    print(float(np.load(sys.argv[1]).sum()))
'''


def child(args: List[str], cwd: Path) -> Tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    p = subprocess.Popen(args, cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def best(runs: List[Tuple[float, float]]) -> Tuple[float, float]:
    return min(r[0] for r in runs), max(r[1] for r in runs)


def bench_array(mib: int, repeat: int, tmp: Path) -> Dict[str, Tuple[float, float]]:
    n = mib * 1024 * 1024 // 8
    res: Dict[str, List[Tuple[float, float]]] = {}
    for _ in range(repeat):
        proj = tmp / f"zb{mib}"
        shutil.rmtree(proj, ignore_errors=True)
        proj.mkdir()
        (proj / "zenbuild.toml").write_text('pipelines = ["big:p"]\n')
        (proj / "big.py").write_text(PIPE.format(n=n))
        res.setdefault("zenbuild cold", []).append(child([PY, "-m", "zenbuild", "run"], proj))
        (proj / "big.py").write_text(PIPE.format(n=n).replace("float(a.sum())",
                                                              "float(a.sum()) + 0"))
        res.setdefault("zenbuild consumer only", []).append(
            child([PY, "-m", "zenbuild", "run"], proj))
        jl = tmp / f"jl{mib}"
        shutil.rmtree(jl, ignore_errors=True)
        script = tmp / "jl.py"
        script.write_text(JOBLIB.format(n=n))
        res.setdefault("joblib cold", []).append(child([PY, str(script), str(jl)], tmp))
        res.setdefault("joblib hit + sum", []).append(child([PY, str(script), str(jl)], tmp))
        npy = tmp / f"a{mib}.npy"
        script = tmp / "np.py"
        script.write_text(NPSAVE.format(n=n))
        res.setdefault("np.save", []).append(child([PY, str(script), str(npy), "save"], tmp))
        res.setdefault("np.load + sum", []).append(child([PY, str(script), str(npy), "load"],
                                                         tmp))
        for d in (proj, jl):
            shutil.rmtree(d, ignore_errors=True)
        npy.unlink()
    return {k: best(v) for k, v in res.items()}


FRAME = '''
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
n = {rows}
cols = {{f"f{{i}}": rng.random(n) for i in range(6)}}
cols.update({{f"i{{i}}": rng.integers(0, 1 << 40, n) for i in range(2)}})
cols["s"] = pd.array([f"key{{i % 1000}}" for i in range(n)], dtype="string")
cols["c"] = pd.Categorical.from_codes(rng.integers(0, 50, n), [f"c{{i}}" for i in range(50)])
df = pd.DataFrame(cols)
'''


def bench_frame(rows: int, repeat: int, tmp: Path) -> Dict[str, float]:
    import pickle

    import pandas as pd

    from zenbuild.serialize import loads, value_digest
    from zenbuild.serialize.buffers import encode_value
    from zenbuild.store.db import Store

    ns: Dict[str, object] = {}
    exec(FRAME.format(rows=rows), ns)
    df = ns["df"]
    assert isinstance(df, pd.DataFrame)
    out: Dict[str, List[float]] = {}
    for i in range(repeat):
        store = Store(str(tmp / f"st{i}"))
        t = time.perf_counter()
        digest = store.put_value(encode_value(df).parts)
        out.setdefault("zenbuild store", []).append(time.perf_counter() - t)
        store.close()
        store = Store(str(tmp / f"st{i}"))  # a new process's view: the blob is verified
        t = time.perf_counter()
        back = loads(store.map_blob(digest))
        out.setdefault("zenbuild load", []).append(time.perf_counter() - t)
        assert back.equals(df)
        store.close()
        t = time.perf_counter()
        with open(tmp / f"df{i}.pkl", "wb") as f:
            pickle.dump(df, f, protocol=5)
        out.setdefault("pickle.dump", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        with open(tmp / f"df{i}.pkl", "rb") as f:
            pickle.load(f)
        out.setdefault("pickle.load", []).append(time.perf_counter() - t)
        try:
            import pyarrow.feather as feather

            t = time.perf_counter()
            feather.write_feather(df, str(tmp / f"df{i}.feather"), compression="uncompressed")
            out.setdefault("feather write", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            feather.read_feather(str(tmp / f"df{i}.feather"))
            out.setdefault("feather read", []).append(time.perf_counter() - t)
        except ImportError:
            pass
        shutil.rmtree(tmp / f"st{i}")
        for p in tmp.glob(f"df{i}.*"):
            p.unlink()
    digests = []
    code = FRAME.format(rows=rows) + "from zenbuild.serialize import value_digest\n" \
        "print(value_digest(df))\n"
    for seed in ("1", "2"):
        digests.append(subprocess.run([PY, "-c", code], capture_output=True, text=True,
                                      check=True, env={**os.environ, "PYTHONHASHSEED": seed}
                                      ).stdout.strip())
    here = value_digest(df)
    res = {k: min(v) for k, v in out.items()}
    res["same digest in 2 processes"] = float(digests[0] == digests[1] == here)
    return res


POLARS_FRAME = '''
import numpy as np, polars as pl
rng = np.random.default_rng(0)
n = {rows}
cols = {{f"f{{i}}": rng.random(n) for i in range(6)}}
cols.update({{f"i{{i}}": rng.integers(0, 1 << 40, n) for i in range(2)}})
cols["s"] = [f"key{{i % 1000}}" for i in range(n)]
cols["c"] = pl.Series([f"c{{i}}" for i in rng.integers(0, 50, n)], dtype=pl.Categorical)
df = pl.DataFrame(cols)
'''


def bench_polars(rows: int, repeat: int, tmp: Path) -> Dict[str, float]:
    """A polars frame: zenbuild (as its Arrow table, and as polars' own pickle, the way it
    was stored before) vs polars' write_ipc / read_ipc and pickle protocol 5."""
    import pickle

    import polars as pl

    from zenbuild.serialize import loads, value_digest
    from zenbuild.serialize.buffers import encode_value
    from zenbuild.serialize.pickler import REDUCERS
    from zenbuild.store.db import Store

    ns: Dict[str, object] = {}
    exec(POLARS_FRAME.format(rows=rows), ns)
    df = ns["df"]
    assert isinstance(df, pl.DataFrame)
    value_digest(df)  # registers the polars materializer (done at the first polars value)
    out: Dict[str, List[float]] = {}

    def zenbuild(label: str, i: int) -> None:
        path = str(tmp / f"pst{i}")
        store = Store(path)
        t = time.perf_counter()
        digest = store.put_value(encode_value(df).parts)
        out.setdefault(f"zenbuild store{label}", []).append(time.perf_counter() - t)
        store.close()
        store = Store(path)  # a new process's view: the blob is verified
        t = time.perf_counter()
        back = loads(store.map_blob(digest))
        out.setdefault(f"zenbuild load{label}", []).append(time.perf_counter() - t)
        assert back.equals(df)
        del back
        store.close()
        shutil.rmtree(path)

    for i in range(repeat):
        zenbuild("", i)
        saved = REDUCERS.pop(pl.DataFrame)
        try:
            zenbuild(" (polars pickle)", i)
        finally:
            REDUCERS[pl.DataFrame] = saved
        t = time.perf_counter()
        with open(tmp / f"pl{i}.pkl", "wb") as f:
            pickle.dump(df, f, protocol=5)
        out.setdefault("pickle.dump", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        with open(tmp / f"pl{i}.pkl", "rb") as f:
            pickle.load(f)
        out.setdefault("pickle.load", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        df.write_ipc(tmp / f"pl{i}.arrow", compression="uncompressed")
        out.setdefault("write_ipc", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        pl.read_ipc(tmp / f"pl{i}.arrow")
        out.setdefault("read_ipc", []).append(time.perf_counter() - t)
        for p in tmp.glob(f"pl{i}.*"):
            p.unlink()
    code = POLARS_FRAME.format(rows=rows) + "from zenbuild.serialize import value_digest\n" \
        "print(value_digest(df))\n"
    digests = [subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                              cwd=str(REPO), env={**os.environ, "PYTHONHASHSEED": seed}
                              ).stdout.strip() for seed in ("1", "2")]
    res = {k: min(v) for k, v in out.items()}
    res["same digest in 2 processes"] = float(digests[0] == digests[1] == value_digest(df))
    return res


def print_polars(rows: int, repeat: int, tmp: Path) -> None:
    """The polars lines (only when polars is installed)."""
    try:
        import polars  # noqa: F401
    except ImportError:
        print("polars DataFrame: skipped (polars is not installed)\n")
        return
    f = bench_polars(rows, repeat, tmp)
    print(f"polars DataFrame {rows:,} rows x 10 columns (6 float, 2 int, 1 string, "
          "1 categorical):")
    for k, v in f.items():
        if k.startswith("same"):
            print(f"  {k}: {'yes' if v else 'NO'}")
        else:
            print(f"  {k:32} {v:8.3f} s")
    print(f"  ratios: store {f['zenbuild store'] / f['pickle.dump']:.2f}x pickle.dump, "
          f"{f['zenbuild store'] / f['write_ipc']:.2f}x write_ipc; load "
          f"{f['zenbuild load'] / f['pickle.load']:.3f}x pickle.load, "
          f"{f['zenbuild load'] / f['read_ipc']:.2f}x read_ipc\n")


def bench_output(mib: int, repeat: int, tmp: Path) -> Dict[str, float]:
    from zenbuild.store import blobs
    from zenbuild.store.db import Store

    src = tmp / "out.bin"
    chunk = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(mib):
            f.write(chunk[i % 997:] + chunk[: i % 997])
    out: Dict[str, List[float]] = {}
    for i in range(repeat):
        store = Store(str(tmp / f"ost{i}"))
        t = time.perf_counter()
        store.put_file(str(src))
        out.setdefault("zenbuild capture", []).append(time.perf_counter() - t)
        store.close()
        t = time.perf_counter()
        subprocess.run(["cp", str(src), str(tmp / f"cp{i}.bin")], check=True)
        out.setdefault("cp", []).append(time.perf_counter() - t)
        shutil.rmtree(tmp / f"ost{i}")
        (tmp / f"cp{i}.bin").unlink()
    src.unlink()
    res = {k: min(v) for k, v in out.items()}
    print(f"  (capture used {blobs.last_copy})")
    return res

# The real CLI in its own process, which writes that process's peak RSS (not its workers')
SELF_RSS = Path(__file__).resolve().parent / "self_rss.py"


def bench_dask(mib: int, repeat: int, tmp: Path) -> Dict[str, Tuple[float, float]]:
    """The array pipeline in-process, on a LocalCluster the run starts, and on a cluster
    already running (--scheduler): wall time, and the main process's own peak RSS (the
    Dask client; the workers are other processes)."""
    import distributed

    n = mib * 1024 * 1024 // 8
    res: Dict[str, List[Tuple[float, float]]] = {}
    rss = tmp / "rss.txt"

    def one(key: str, proj: Path, *args: str) -> None:
        wall, _ = child([PY, str(SELF_RSS), str(rss), "run", *args], proj)
        res.setdefault(key, []).append((wall, float(rss.read_text())))

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        for _ in range(repeat):
            for label, args in (("in-process", ()),
                                ("dask, cluster started by the run", ("--executor", "dask")),
                                ("dask, running cluster", ("--executor", "dask",
                                                           "--scheduler", address))):
                proj = tmp / "zbdask"
                shutil.rmtree(proj, ignore_errors=True)
                proj.mkdir()
                (proj / "zenbuild.toml").write_text('pipelines = ["big:p"]\n')
                (proj / "big.py").write_text(PIPE.format(n=n))
                one(f"{label}: cold", proj, *args)
                (proj / "big.py").write_text(PIPE.format(n=n).replace(
                    "float(a.sum())", "float(a.sum()) + 0"))
                one(f"{label}: consumer only", proj, *args)
                shutil.rmtree(proj)
            # the fixed cost no run with Dask's client in it can avoid: the import alone, and
            # the import plus connecting to the running cluster
            res.setdefault("python -c 'import distributed'", []).append(
                child([PY, "-c", "import distributed"], tmp))
            res.setdefault("... and connect a Client", []).append(child(
                [PY, "-c", f"import distributed; distributed.Client({address!r}).close()"], tmp))
    return {k: best(v) for k, v in res.items()}


def print_dask(mib: int, repeat: int, tmp: Path) -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("dask: skipped (pip install 'zenbuild[dask]')\n")
        return
    r = bench_dask(mib, repeat, tmp)
    print(f"--executor dask, array {mib} MiB (2 workers; RSS: the main process, i.e. the "
          "client):")
    print(f"  {'':50} {'wall s':>8} {'client RSS MiB':>15}")
    for k, (wall, peak) in r.items():
        print(f"  {k:50} {wall:8.2f} {peak:15.0f}")
    base = r["in-process: cold"][0]
    bound = 1.3 * mib + 60
    for label in ("dask, cluster started by the run", "dask, running cluster"):
        c, w = r[f"{label}: cold"], r[f"{label}: consumer only"]
        print(f"  {label}: cold {c[0] / base:.2f}x in-process, consumer only "
              f"{w[0] / r['in-process: consumer only'][0]:.2f}x (target <= 2); client RSS "
              f"{c[1]:.0f} / {w[1]:.0f} MiB vs bound {bound:.0f}")
    fixed = r["... and connect a Client"][0]
    print(f"  fixed cost of a client: {fixed:.2f} s = "
          f"{fixed / r['in-process: consumer only'][0]:.2f}x the whole in-process consumer-only "
          "run")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", action="store_true", help="add the 2 GiB array")
    ap.add_argument("--sizes", default="40,400", help="array sizes in MiB")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--output-mib", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="where to work (default: a temp dir)")
    ap.add_argument("--dask-mib", type=int, default=400, help="array size for the Dask "
                    "comparison (0: skip it)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.big:
        sizes.append(2048)
    tmp = Path(tempfile.mkdtemp(prefix="zb-values-", dir=args.dir))
    print(f"machine: {machine()}")
    print(f"work dir: {tmp} (repeat {args.repeat}: best wall, highest peak RSS)\n")
    try:
        for mib in sizes:
            r = bench_array(mib, args.repeat, tmp)
            print(f"array {mib} MiB (float64, make + sum):")
            print(f"  {'':26} {'wall s':>8} {'peak RSS MiB':>13}")
            for k, (wall, rss) in r.items():
                print(f"  {k:26} {wall:8.2f} {rss:13.0f}")
            zc, jc = r["zenbuild cold"], r["joblib cold"]
            zw, jw = r["zenbuild consumer only"], r["joblib hit + sum"]
            bound = 1.3 * mib + 60
            print(f"  ratios: cold {zc[0] / jc[0]:.2f}x joblib (target <= 1.2), consumer-only "
                  f"{zw[0] / jw[0]:.2f}x joblib hit (target <= 1.0); peak RSS {zc[1]:.0f} / "
                  f"{zw[1]:.0f} MiB vs bound 1.3x + 60 = {bound:.0f} MiB\n")
        f = bench_frame(args.rows, args.repeat, tmp)
        print(f"DataFrame {args.rows:,} rows x 10 columns (6 float, 2 int, 1 string, "
              "1 category):")
        for k, v in f.items():
            if k.startswith("same"):
                print(f"  {k}: {'yes' if v else 'NO'}")
            else:
                print(f"  {k:26} {v:8.3f} s")
        print(f"  ratios: store {f['zenbuild store'] / f['pickle.dump']:.2f}x pickle.dump "
              f"(target <= 1.2), load {f['zenbuild load'] / f['pickle.load']:.3f}x pickle.load "
              "(target <= 1.0)\n")
        print_polars(args.rows, args.repeat, tmp)
        if args.dask_mib:
            print_dask(args.dask_mib, args.repeat, tmp)
        o = bench_output(args.output_mib, args.repeat, tmp)
        print(f"output file {args.output_mib} MiB:")
        for k, v in o.items():
            print(f"  {k:26} {v:8.3f} s")
        print(f"  ratio: capture {o['zenbuild capture'] / o['cp']:.2f}x cp (target <= 1.2)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
