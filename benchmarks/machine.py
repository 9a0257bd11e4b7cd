"""What machine a benchmark ran on, in one line for its printed figures."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """OS, CPU model, cores (this process may use), RAM, Python, and the load average now."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in open("/proc/meminfo") if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.system()} {platform.release()} {platform.machine()}, {cpu}, {n} cores"
            f"{mem}, Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
