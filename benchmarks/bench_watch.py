#!/usr/bin/env python3
"""Watch latency: write -> first invalidated step starts, and write -> rebuild end (medians).

Under `zenbuild watch`, over N edits, for the ML example and the N=200 / F=2,000 synthetic
pipeline, with each rebuild runner (fork from a warm server, fresh interpreter).

    .venv/bin/python benchmarks/bench_watch.py                 # both pipelines, both runners
    .venv/bin/python benchmarks/bench_watch.py --edits 20 --only ml --modes fork

Prints a table and the machine; asserts nothing about time (these machines are shared and
noisy). Every wait is bounded (--timeout)."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^\d+ executed, \d+ cached.* in \d+\.\d\ds$")
STARTED = re.compile(r"^Step (\S+) has started\.$")
FINISHED = re.compile(r"^Step (\S+) has (?:finished in|failed after)")


@dataclass
class Sample:
    first_step_ms: float
    end_ms: float
    executed: int


@dataclass
class Result:
    label: str
    mode: str
    samples: List[Sample] = field(default_factory=list)
    first_run_s: float = 0.0
    misses: int = 0  # edits that found no invalidated step (should be 0)


class WatchProc:
    """`zenbuild watch` with each output line stamped with perf_counter() on arrival."""

    def __init__(self, root: Path, mode: str, debounce: int, timeout: float) -> None:
        env = dict(os.environ, NO_COLOR="1", ZENBUILD_WATCH_EXEC=mode,
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.timeout = timeout
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zenbuild", "watch", "--project-dir", str(root),
             "--debounce", str(debounce)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True,
        )
        self.lines: queue.Queue[Optional[Tuple[float, str]]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put((time.perf_counter(), line.rstrip("\n")))
        self.lines.put(None)

    def until(self, rx: re.Pattern[str]) -> List[Tuple[float, str]]:
        got: List[Tuple[float, str]] = []
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.001, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"timed out waiting for {rx.pattern!r}; got {got[-10:]}") from None
            if item is None:
                raise RuntimeError(f"zenbuild watch exited ({self.proc.poll()}); got {got[-10:]}")
            got.append(item)
            if rx.search(item[1]):
                return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(self.timeout)


def measure(root: Path, label: str, mode: str, edit: Callable[[int], None], edits: int,
            debounce: int, timeout: float, pause: float) -> Result:
    res = Result(label, mode)
    w = WatchProc(root, mode, debounce, timeout)
    try:
        w.until(SUMMARY)
        res.first_run_s = time.perf_counter() - w.t_start
        w.until(re.compile(r"^watching "))
        time.sleep(pause)  # let the warm server finish pre-importing what the first run used
        for i in range(edits):
            t0 = time.perf_counter()
            edit(i)
            lines = w.until(re.compile(r"^changed: "))
            lines += w.until(SUMMARY)
            end = lines[-1][0]
            ran = {m.group(1) for _, x in lines if (m := FINISHED.match(x))}
            starts = [t for t, x in lines if (m := STARTED.match(x)) and m.group(1) in ran]
            if not starts:
                res.misses += 1
                print(f"  edit {i} of {label} [{mode}] executed nothing:\n    "
                      + "\n    ".join(x for _, x in lines), file=sys.stderr)
                continue
            res.samples.append(Sample((starts[0] - t0) * 1000, (end - t0) * 1000, len(ran)))
            time.sleep(pause)  # the watcher is idle again before the next edit
    finally:
        w.stop()
    return res


def ml_project(dest: Path) -> Tuple[Path, Callable[[int], None]]:
    root = dest / "ml"
    shutil.copytree(REPO / "examples" / "ml", root / "examples" / "ml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "examples" / "__init__.py", root / "examples" / "__init__.py")
    (root / "zenbuild.toml").write_text('pipelines = ["examples.ml.pipeline:train_report"]\n')
    csv = root / "examples" / "ml" / "data" / "iris.csv"
    original = csv.read_text().splitlines()

    serial = itertools.count(1)

    def edit(i: int) -> None:  # a new sepal length in the last row: a distinct file every time
        i = next(serial)
        rows = list(original)
        fields = rows[-1].split(",")
        fields[0] = f"{5.0 + i / 1000:.3f}"
        rows[-1] = ",".join(fields)
        csv.write_text("\n".join(rows) + "\n")

    return root, edit


def ml_code_edit(root: Path) -> Callable[[int], None]:
    model = root / "examples" / "ml" / "pipeline.py"
    text = model.read_text()
    assert "LEARNING_RATE = 0.1\n" in text

    serial = itertools.count(1)

    def edit(i: int) -> None:  # a new learning rate: train and everything after it reruns
        rate = 0.1 + next(serial) / 1e4
        model.write_text(text.replace("LEARNING_RATE = 0.1\n", f"LEARNING_RATE = {rate}\n"))

    return edit


def synthetic_project(dest: Path, n: int, f: int) -> Tuple[Path, Callable[[int], None], int]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gen_synthetic  # noqa: E402 - the shared generator (benchmarks/gen_synthetic.py)

    root = dest / f"synth-{n}-{f}"
    spec = gen_synthetic.generate(root, n, f)
    target = spec.edit_target()
    path = root / spec.file_paths[target]
    size = path.stat().st_size
    expect = len(spec.expected_after_edit(target))

    serial = itertools.count(1)

    def edit(i: int) -> None:  # same size, new content every time
        path.write_bytes(f"{next(serial):08d}".encode().ljust(size, b"e"))

    return root, edit, expect


def fmt(values: List[float]) -> str:
    return f"{statistics.median(values):7.1f}" if values else "    n/a"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--debounce", type=int, default=50, help="ms (the default of zenbuild watch)")
    ap.add_argument("--modes", default="fork,spawn")
    ap.add_argument("--only", choices=["ml", "synthetic"], default=None)
    ap.add_argument("-n", "--steps", type=int, default=200)
    ap.add_argument("-f", "--files", type=int, default=2000)
    ap.add_argument("--pause", type=float, default=0.3, help="idle seconds between edits")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated projects")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="zb-bench-watch-"))
    results: List[Result] = []
    notes: Dict[str, str] = {}
    try:
        targets: List[Tuple[str, Path, Callable[[int], None]]] = []
        if args.only in (None, "ml"):
            root, edit = ml_project(tmp)
            targets.append(("ml: edit iris.csv", root, edit))
            targets.append(("ml: edit pipeline.py", root, ml_code_edit(root)))
        if args.only in (None, "synthetic"):
            root, edit, expect = synthetic_project(tmp, args.steps, args.files)
            label = f"synthetic N={args.steps} F={args.files}: edit 1 file"
            notes[label] = f"{expect} steps invalidated per edit"
            targets.append((label, root, edit))
        for label, root, edit in targets:
            for mode in modes:
                shutil.rmtree(root / ".zenbuild", ignore_errors=True)
                r = measure(root, label, mode, edit, args.edits, args.debounce, args.timeout,
                            args.pause)
                results.append(r)
                print(f"  measured {label} [{mode}]: {len(r.samples)} edits", file=sys.stderr)
    finally:
        if args.keep:
            print(f"projects kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs ({cpu}), "
          f"Python {platform.python_version()}; debounce {args.debounce} ms; "
          f"median of {args.edits} edits")
    print(f"{'pipeline':48} {'runner':6} {'write->1st step ms':>19} {'write->end ms':>14} "
          f"{'executed':>8} {'first run s':>11}")
    for r in results:
        first = [s.first_step_ms for s in r.samples]
        end = [s.end_ms for s in r.samples]
        ex = statistics.median([s.executed for s in r.samples]) if r.samples else 0
        miss = f"  ({r.misses} edits ran nothing!)" if r.misses else ""
        print(f"{r.label:48} {r.mode:6} {fmt(first):>19} {fmt(end):>14} {ex:8.0f} "
              f"{r.first_run_s:11.2f}{miss}")
    by = {(r.label, r.mode): r for r in results}
    for label in dict.fromkeys(r.label for r in results):
        fork, spawn = by.get((label, "fork")), by.get((label, "spawn"))
        if fork and spawn and fork.samples and spawn.samples:
            ratio = (statistics.median(s.first_step_ms for s in spawn.samples)
                     / statistics.median(s.first_step_ms for s in fork.samples))
            print(f"  {label}: fresh interpreter / warm fork (write->1st step) = {ratio:.2f}x"
                  + (f"; {notes[label]}" if label in notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
