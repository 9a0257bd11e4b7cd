#!/usr/bin/env python3
"""Run the zenbuild CLI in this process and write this process's own peak RSS in MiB to a file:
``python benchmarks/self_rss.py OUT ZENBUILD-ARGS...``. Used where the main process must be
told apart from its workers (-j, Dask), by bench_values.py and tests/e2e/test_worker_values.py.

The peak is VmHWM of this process's memory map, not ``ru_maxrss``: exec keeps the peak of the
process that forked it (a test runner or a benchmark holding a big frame), which can be more
(a 300 MiB parent: ru_maxrss 310 MiB, VmHWM 8 MiB)."""

import runpy
import sys


def hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    out = sys.argv[1]
    sys.argv = ["zenbuild", *sys.argv[2:]]
    code: object = 0
    try:
        runpy.run_module("zenbuild", run_name="__main__")
    except SystemExit as e:
        code = e.code or 0
    with open(out, "w") as f:
        f.write(str(hwm_mib()))
    sys.exit(code)
