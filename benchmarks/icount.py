#!/usr/bin/env python3
"""Scaling in steps against doit, counted in user-space instructions (valgrind callgrind).

Wall and CPU time swing by a third between identical runs on a shared 2-core VM; an
instruction count does not move with the load, so the figures the scaling targets of issue 13
are read from come from here. For each size it generates the synthetic project (same seed as
run_bench.py, doit's dodo.py beside it), settles both tools' stores (three runs each), then
counts one no-op run of each and, for the smaller sizes, one cold run of each (empty store,
doit's database and outputs removed). It prints the counts and the zenbuild/doit ratios with
the machine. It never fails on a figure.

    python benchmarks/icount.py                      # N=200, 1,000 and 5,000; cold up to 1,000
    python benchmarks/icount.py --sizes 200:2000 --cold-max 200

Needs valgrind (Debian: valgrind) and doit (pip install doit==0.37.0); a count under
callgrind takes about 50 times the run's own time (N=5,000 no-op: ~2 minutes)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_synthetic import doit_script, generate  # noqa: E402
from machine import machine  # noqa: E402


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both tools read and write their bytecode
    env["PYTHONHASHSEED"] = "0"  # (set iteration order moves a few instructions otherwise)
    env.pop("CI", None)
    return env


def _zenbuild() -> List[str]:
    return [sys.executable, "-m", "zenbuild", "run", "-q"]


def _doit() -> List[str]:
    return [sys.executable, "-m", "doit"]


def count(cmd: List[str], cwd: Path) -> Optional[int]:
    """Instructions of one run of ``cmd`` under callgrind, or None if it failed."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=3600)
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or m is None:
        print(f"    ! {' '.join(cmd[-3:])} failed (rc {proc.returncode}): {proc.stderr[-400:]}",
              flush=True)
        return None
    return int(m.group(1))


def settle(root: Path) -> None:
    for _ in range(3):
        for cmd in (_zenbuild(), _doit()):
            subprocess.run(cmd, cwd=str(root), env=_env(), capture_output=True, timeout=3600)


def cold(root: Path) -> Tuple[Optional[int], Optional[int]]:
    shutil.rmtree(root / ".zenbuild", ignore_errors=True)
    shutil.rmtree(root / "build", ignore_errors=True)
    z = count(_zenbuild(), root)
    for p in root.glob(".doit.db*"):
        p.unlink()
    shutil.rmtree(root / "build_doit", ignore_errors=True)
    d = count(_doit(), root)
    return z, d


def ratio(a: Optional[int], b: Optional[int]) -> str:
    return f"{a / b:.3f}" if a and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200:2000,1000:20000,5000:50000",
                    help="N:F pairs (steps:files), comma separated")
    ap.add_argument("--cold-max", type=int, default=1000, help="count cold runs up to this N")
    ap.add_argument("--dir", type=Path, default=None, help="where to generate (default: temp)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    try:
        import doit  # noqa: F401
    except ImportError:
        print("doit is not installed (pip install doit==0.37.0)", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    base = args.dir or Path(tempfile.mkdtemp(prefix="zb-icount-"))
    rows = []
    for pair in args.sizes.split(","):
        n, f = (int(x) for x in pair.split(":"))
        root = base / f"n{n}"
        if root.exists():
            shutil.rmtree(root)
        doit_script(root, generate(root, n, f, seed=0))
        settle(root)
        z, d = count(_zenbuild(), root), count(_doit(), root)
        print(f"  N={n:>5} F={f:>6} no-op: zenbuild {z or 0:>14,} doit {d or 0:>14,} "
              f"ratio {ratio(z, d)}", flush=True)
        row: Dict[str, Any] = {"n": n, "noop": (z, d)}
        if n <= args.cold_max:
            cz, cd = cold(root)
            print(f"  N={n:>5} F={f:>6} cold:  zenbuild {cz or 0:>14,} doit {cd or 0:>14,} "
                  f"ratio {ratio(cz, cd)}", flush=True)
            row["cold"] = (cz, cd)
        rows.append(row)
    if len(rows) >= 2:
        a, b = rows[0], rows[1]
        span = b["n"] - a["n"]
        for kind in ("noop", "cold"):
            if kind in a and kind in b and all(a[kind]) and all(b[kind]):
                zs = (b[kind][0] - a[kind][0]) / span
                ds = (b[kind][1] - a[kind][1]) / span
                print(f"  per step ({kind}, N={a['n']} to {b['n']}): zenbuild {zs / 1e6:.3f}M, "
                      f"doit {ds / 1e6:.3f}M instructions", flush=True)
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
