"""Benchmark: what recording a step's dynamic trace costs (zenbuild.trace).

Prints, as ratios measured in one run (best of --repeat):
- a step opening 10,000 small files in the project: no hook in the process, the hook installed
  but nothing recording (every later step in that process), and recording;
- 100,000 os.environ.get calls, not recording vs recording;
- call tracing (trace_calls) on a call-bound loop, a numpy-bound step and a pandas-bound step.

    .venv/bin/python benchmarks/bench_trace.py [--files 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

from zenbuild.trace import Recorder, TraceOptions

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread: the 2-core machine is shared and noisy


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def paired(plain: Callable[[], Any], other: Callable[[], Any], repeat: int) -> Any:
    """Best of ``repeat`` for each, measured alternately so load on the machine hits both."""
    a, b = [], []
    for _ in range(repeat):
        for fn, out in ((plain, a), (other, b)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(a), min(b)


def traced(opts: TraceOptions, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> None:
        with Recorder(opts):
            fn()

    return run


MODES = ("no hook", "hook idle", "recording")


def read_files(paths: List[str]) -> None:
    for p in paths:
        with open(p) as f:
            f.read()


def child(mode: str, root: str) -> None:
    """One timing of reading every file under root/data in this fresh process."""
    paths = [os.path.join(root, "data", n) for n in os.listdir(os.path.join(root, "data"))]
    opts = TraceOptions(root, os.path.join(root, ".zenbuild"), track_env=False)
    read_files(paths)  # warm the page cache and the code paths
    if mode == "hook idle":
        with Recorder(opts):  # installs the hook; nothing records afterwards
            pass
    t0 = time.perf_counter()
    if mode == "recording":
        with Recorder(opts):
            read_files(paths)
    else:
        read_files(paths)
    print(time.perf_counter() - t0)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs ({platform.platform()})")
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "data"))
        paths = [os.path.join(root, "data", f"f{i}.txt") for i in range(a.files)]
        for p in paths:
            with open(p, "w") as f:
                f.write("x")

        files = TraceOptions(root, os.path.join(root, ".zenbuild"), track_env=False)
        with Recorder(files) as rec:
            read_files(paths)
        assert rec.trace is not None and len(rec.trace.reads) == a.files
        # each mode in a fresh interpreter (the hook, once installed, stays), alternately
        r: Dict[str, List[float]] = {m: [] for m in MODES}
        for _ in range(a.repeat):
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--child", mode, root],
                                     check=True, capture_output=True, text=True).stdout
                r[mode].append(float(out))
        base = min(r["no hook"])
        print(f"\nstep opening {a.files:,} small files (best of {a.repeat}, fresh processes):")
        for k, v in r.items():
            print(f"  {k:<12} {min(v) * 1000:8.1f} ms  x{min(v) / base:.2f}")

        os.environ["ZB_BENCH_VAR"] = "1"

        def env_reads() -> None:
            for _ in range(100_000):
                os.environ.get("ZB_BENCH_VAR")

        env = TraceOptions(root, track_reads=False)
        e0, e1 = paired(env_reads, traced(env, env_reads), a.repeat)
        print(f"\n100,000 os.environ.get: {e0 * 1000:.1f} ms -> recording {e1 * 1000:.1f} ms "
              f"(x{e1 / e0:.2f})")

        calls = TraceOptions(root, track_reads=False, track_env=False, trace_calls=True)
        print(f"\ncall tracing ({'sys.monitoring' if sys.version_info >= (3, 12) else 'cProfile'})"
              ":")
        for name, body in workloads():
            body()  # warm up (imports, BLAS threads, caches)
            t0, t1 = paired(body, traced(calls, body), a.repeat)
            print(f"  {name:<26} {t0 * 1000:8.1f} ms -> {t1 * 1000:8.1f} ms  x{t1 / t0:.2f}")


def workloads() -> Any:
    def f(x: int) -> int:
        return x + 1

    def call_bound() -> None:
        s = 0
        for _ in range(500_000):
            s = f(s)

    yield "call-bound loop (500k)", call_bound
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return
    rng = np.random.default_rng(0)
    m = rng.random((300, 300))

    def numpy_bound() -> None:
        x = m
        for _ in range(20):
            x = np.tanh(x @ m) / 300
        np.linalg.svd(x)

    yield "numpy-bound step", numpy_bound
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return
    df = pd.DataFrame({"k": rng.integers(0, 100, 200_000), "v": rng.random(200_000)})

    def pandas_bound() -> None:
        g = df.groupby("k")["v"].agg(["mean", "std"])
        df.merge(g, left_on="k", right_index=True).sort_values("v").head()

    yield "pandas-bound step", pandas_bound


if __name__ == "__main__":
    main()
