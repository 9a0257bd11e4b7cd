"""The project every fault test builds on, and how to tell whether a store came through whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

PIPE = '''
import time
from zenbuild import Dir, File, Output, pipeline, step


@step
def load(src: File) -> list:
    time.sleep(0.01)
    return [int(x) for x in src.read_text().split()]


@step
def square(nums: list) -> list:
    time.sleep(0.01)
    return [n * n for n in nums]


@step
def big(nums: list, out: Output) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = bytes((n * 7 + i) % 256 for i, n in enumerate(nums)) * (600_000 // max(len(nums), 1))
    with open(out, "wb") as f:
        for i in range(0, len(data), 65536):
            f.write(data[i:i + 65536])
    return len(data)


@step
def parts(nums: list, out: Output) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(nums):
        (out / f"{i}.txt").write_text(str(n) * 2000)
        time.sleep(0.002)


@step
def total(sq: list, size: int, d: Dir) -> int:
    return sum(sq) + size + len(list(d.iterdir()))


@step
def report(t: int, out: Output) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(str(t))


@pipeline
def faults():
    nums = load(File("in.txt"))
    size = big(nums, Output("build/big.bin"))
    parts(nums, Output("build/parts"))
    report(total(square(nums), size, Dir("build/parts")), Output("build/report.txt"))
'''


def expected(numbers: List[int]) -> Dict[str, bytes]:
    """What a clean run of PIPE leaves in build/, computed without zenbuild."""
    data = bytes((n * 7 + i) % 256 for i, n in enumerate(numbers)) * (600_000 // max(len(numbers), 1))
    out = {"build/big.bin": data}
    for i, n in enumerate(numbers):
        out[f"build/parts/{i}.txt"] = (str(n) * 2000).encode()
    total = sum(n * n for n in numbers) + len(data) + len(numbers)
    out["build/report.txt"] = str(total).encode()
    return out


def make(root: Path, numbers: List[int], store: Optional[str] = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipe.py").write_text(PIPE)
    (root / "zenbuild.toml").write_text('pipelines = ["pipe:faults"]\n'
                                        + (f'store = "{store}"\n' if store else ""))
    set_input(root, numbers)


def set_input(root: Path, numbers: List[int]) -> None:
    (root / "in.txt").write_text(" ".join(map(str, numbers)))


def env() -> Dict[str, str]:
    e = dict(os.environ)
    e.pop("CI", None)
    e["NO_COLOR"] = "1"
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    return e


def zb(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zenbuild", *args, "--project-dir", str(root)],
                          capture_output=True, text=True, timeout=timeout, env=env())


def start(root: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "zenbuild", *args, "--project-dir", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True, **kw)  # type: ignore[call-overload]


def kill_after(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """kill -9 ``proc`` (and its group) after ``delay`` s; False if it had already finished."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return True


def wrong(root: Path, numbers: List[int]) -> List[str]:
    """Files of build/ that differ from a clean run's (missing, different or extra)."""
    want = expected(numbers)
    build = root / "build"
    have = {p.relative_to(root).as_posix() for p in build.rglob("*") if p.is_file()} \
        if build.exists() else set()
    bad = sorted(have - set(want))
    bad += sorted(rel for rel, data in want.items()
                  if not (root / rel).is_file() or (root / rel).read_bytes() != data)
    return bad


def leftovers(root: Path, store: Path) -> List[str]:
    """Temp files left anywhere in the project or the store after a run finished."""
    out = [str(p) for p in root.rglob("*") if ".zenbuild-tmp-" in p.name]
    tmp = store / "tmp"
    if tmp.exists():
        out += [str(p) for p in tmp.iterdir()]
    return out
