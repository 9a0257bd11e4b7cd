"""Fault injection through the real CLI: kill -9 at random points, damaged stores, a full disk
and concurrent runs. Each part prints its figures (with capsys disabled) and asserts they are
all zero: corrupt stores, wrong results, leftovers."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager, Dict, List

import pytest
from conftest import sqlite_db

from faults.project import kill_after, leftovers, make, set_input, start, wrong, zb

SEED = int(os.environ.get("ZENBUILD_FAULT_SEED", "20261201"))
TRIALS_PER_KIND = 8  # x 4 kinds = 32 kill -9 trials


def _figures(capsys: pytest.CaptureFixture[str], title: str, figures: Dict[str, object]) -> None:
    with capsys.disabled():
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        sys.stdout.write(f"\n[faults] {title}: {shown}\n")


def _recovered(root: Path, numbers: List[int], problems: Dict[str, List[str]], label: str,
               repair: bool = False) -> None:
    """After a fault: a normal run succeeds with the right results, the store verifies clean
    (with ``repair``: after `cache verify --repair`, when the damage was in blobs no step of
    the run needed) and nothing is left over."""
    store = root / ".zenbuild"
    r = zb(root, "run")
    if r.returncode != 0 or "Traceback" in r.stdout + r.stderr:
        problems["corrupt stores"].append(f"{label}: run exit {r.returncode}: {r.stderr[-400:]}")
        return
    bad = wrong(root, numbers)
    if bad:
        problems["wrong results"].append(f"{label}: {bad[:3]}")
    v = zb(root, "cache", "verify")
    if v.returncode != 0 and repair and "--repair" in v.stdout:
        zb(root, "cache", "verify", "--repair")
        v = zb(root, "cache", "verify")
        r = zb(root, "run")
        if r.returncode != 0 or wrong(root, numbers):
            problems["wrong results"].append(f"{label}: after repair: {r.stderr[-300:]}")
    if v.returncode != 0:
        problems["corrupt stores"].append(f"{label}: verify: {v.stdout[-400:]}")
    left = leftovers(root, store)
    if left:
        problems["leftovers"].append(f"{label}: {left[:3]}")


def test_kill_9_at_random_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    root = tmp_path / "proj"
    base = [3, 1, 4, 1, 5, 9, 2, 6]
    make(root, base)
    t0 = time.monotonic()
    assert zb(root, "run").returncode == 0
    cold = time.monotonic() - t0  # one whole cold run: kills land anywhere within it
    problems: Dict[str, List[str]] = {"corrupt stores": [], "wrong results": [], "leftovers": []}
    killed = finished = 0

    def cold_run(i: int) -> List[int]:
        shutil.rmtree(root / ".zenbuild", ignore_errors=True)
        shutil.rmtree(root / "build", ignore_errors=True)
        return base

    def incremental(i: int) -> List[int]:
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 10))]
        set_input(root, nums)
        return nums

    def restore(i: int) -> List[int]:
        shutil.rmtree(root / "build", ignore_errors=True)  # every output comes from the store
        return current

    kinds: List[tuple[str, Callable[[int], List[int]], List[str]]] = [
        ("cold", cold_run, []), ("incremental", incremental, []), ("restore", restore, []),
        ("-j 2", incremental, ["-j", "2"]),
    ]
    current = base
    for kind, prepare, extra in kinds:
        for i in range(TRIALS_PER_KIND):  # each trial starts from the whole state the last
            current = prepare(i)  # one's recovery run left (checked by _recovered)
            delay = rng.uniform(0.15, 0.9) * cold  # startup is ~half of a run
            proc = start(root, "run", *extra)
            if kill_after(proc, delay):
                killed += 1
            else:
                finished += 1
            _recovered(root, current, problems, f"{kind} #{i} (kill after {delay:.3f}s)")
    trials = TRIALS_PER_KIND * len(kinds)
    trash = root / ".zenbuild" / "trash"  # a killed step's partial files it could not tell
    trashed = sum(1 for p in trash.rglob("*") if p.is_file()) if trash.exists() else 0
    _figures(capsys, f"kill -9 (seed {SEED})", {
        "trials": trials, "killed mid-run": killed, "finished before the kill": finished,
        "files kept in trash (since the last cold trial)": trashed,
        **{k: len(v) for k, v in problems.items()}})
    assert trials >= 30
    assert killed >= trials // 3, "most kills should land inside runs"
    assert problems == {"corrupt stores": [], "wrong results": [], "leftovers": []}


def _db(root: Path) -> ContextManager[sqlite3.Connection]:
    return sqlite_db(root / ".zenbuild" / "zenbuild.db")  # committed and closed


def test_damaged_blobs_rows_and_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED + 1)
    nums = [2, 7, 1, 8, 2, 8]
    root = tmp_path / "proj"
    make(root, nums)
    assert zb(root, "run").returncode == 0
    pristine = tmp_path / "pristine"
    shutil.copytree(root / ".zenbuild", pristine)

    def reset() -> None:
        shutil.rmtree(root / ".zenbuild")
        shutil.copytree(pristine, root / ".zenbuild")
        shutil.rmtree(root / "build")

    def flip_cas_blob() -> None:
        blobs = sorted(p for p in (root / ".zenbuild" / "cas").rglob("*") if p.is_file())
        p = rng.choice(blobs)
        data = bytearray(p.read_bytes())
        data[rng.randrange(len(data))] ^= 0xFF
        p.write_bytes(bytes(data))

    def flip_inline_blob() -> None:
        with _db(root) as db:
            db.execute("UPDATE blobs SET data = X'00' || data WHERE rowid IN "
                       "(SELECT rowid FROM blobs ORDER BY digest LIMIT 3)")

    def bad_utf8_row() -> None:
        with _db(root) as db:
            db.execute("UPDATE actions SET outputs = CAST(X'FFFE' AS TEXT) "
                       "WHERE step IN ('parts', 'big')")

    def garbage_json_row() -> None:
        with _db(root) as db:
            db.execute("UPDATE actions SET outputs = '{\"build/parts\": 5}', "
                       "discovered = 'not json' WHERE step = 'parts'")

    def wrong_types() -> None:
        with _db(root) as db:
            db.execute("UPDATE actions SET created = 'x', value_digest = X'00' WHERE step = 'load'")
            db.execute("UPDATE files SET size = 'big'")

    cases = [flip_cas_blob, flip_inline_blob, bad_utf8_row, garbage_json_row, wrong_types]
    problems: Dict[str, List[str]] = {"corrupt stores": [], "wrong results": [], "leftovers": []}
    for damage in cases:
        reset()
        damage()
        _recovered(root, nums, problems, damage.__name__, repair=True)
    # pages: garbage in the database file is one clear error (exit 2); moving the store away
    # (as the message says) gets a whole build back
    pages_ok = 0
    for _ in range(3):
        reset()
        db = root / ".zenbuild" / "zenbuild.db"
        for name in ("zenbuild.db-wal", "zenbuild.db-shm"):
            (root / ".zenbuild" / name).unlink(missing_ok=True)
        data = bytearray(db.read_bytes())
        start_at = rng.randrange(0, len(data) // 2)
        data[start_at:start_at + 8192] = rng.randbytes(min(8192, len(data) - start_at))
        db.write_bytes(bytes(data))
        r = zb(root, "run")
        if r.returncode == 2 and "move the store folder away" in r.stderr.lower():
            pages_ok += 1
            shutil.move(str(root / ".zenbuild"), str(tmp_path / f"damaged-{pages_ok}"))
        elif r.returncode != 0 or "Traceback" in r.stderr:
            problems["corrupt stores"].append(f"pages: exit {r.returncode}: {r.stderr[-300:]}")
            continue
        _recovered(root, nums, problems, "pages")
    _figures(capsys, f"damaged stores (seed {SEED + 1})", {
        "blob/row cases": len(cases), "page damage trials": 3,
        "stopped with the move-away message": pages_ok, **{k: len(v) for k, v in problems.items()}})
    assert problems == {"corrupt stores": [], "wrong results": [], "leftovers": []}


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root (CI runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {where} as root ({r.stderr.strip()}): the full-disk "
                    "test needs `mount -t tmpfs` (a container needs CAP_SYS_ADMIN)")


def test_a_full_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "small"
    _mount_tmpfs(small, "2500k")
    try:
        root = tmp_path / "proj"
        nums = [1, 2, 3]
        make(root, nums, store=str(small / "store"))
        r = zb(root, "run")  # big.bin (~600 KB) fits once
        assert r.returncode == 0, r.stderr
        filler = small / "filler"
        free = shutil.disk_usage(small).free
        filler.write_bytes(b"\0" * max(free - 200_000, 0))  # leave ~200 KB: too little for it
        set_input(root, [4, 5, 6, 7])
        r = zb(root, "run")
        out = r.stdout + r.stderr
        failed_cleanly = (r.returncode == 1 and "Traceback" not in out
                          and "no space left on the device" in out and "KB needed" in out
                          and "executed" in r.stdout)  # the run's summary was printed
        assert failed_cleanly, out
        filler.unlink()
        v = zb(root, "cache", "verify")
        assert v.returncode == 0, v.stdout  # what was stored before is intact
        r2 = zb(root, "run")
        assert r2.returncode == 0 and wrong(root, [4, 5, 6, 7]) == [], r2.stderr
        # nearly no room at all: whichever write comes first (the database, a blob) fails
        filler.write_bytes(b"\0" * max(shutil.disk_usage(small).free - 100_000, 0))
        set_input(root, list(range(40)))
        r3 = zb(root, "run")
        out3 = r3.stdout + r3.stderr
        db_full_clean = r3.returncode == 1 and "Traceback" not in out3 and "no space" in out3
        filler.unlink()
        assert db_full_clean, out3
        assert zb(root, "cache", "verify").returncode == 0
        r4 = zb(root, "run")
        assert r4.returncode == 0 and wrong(root, list(range(40))) == []
        # a return value too big for what is left
        vroot = tmp_path / "values"
        vroot.mkdir()
        (vroot / "pipe.py").write_text(
            "from zenbuild import pipeline, step\n\n\n@step\ndef small() -> int:\n    return 1\n\n\n"
            "@step\ndef huge(n: int) -> bytes:\n    return bytes(range(256)) * 3000\n\n\n"
            "@pipeline\ndef v():\n    huge(small())\n")
        (vroot / "zenbuild.toml").write_text(
            f'pipelines = ["pipe:v"]\nstore = "{small / "vstore"}"\n')
        filler.write_bytes(b"\0" * max(shutil.disk_usage(small).free - 300_000, 0))
        r5 = zb(vroot, "run")
        out5 = r5.stdout + r5.stderr
        value_clean = (r5.returncode == 1 and "Traceback" not in out5
                       and "its return value" in out5 and "KB needed" in out5
                       and "1 executed" in r5.stdout and "1 failed" in r5.stdout)
        filler.unlink()
        assert value_clean, out5
        left = leftovers(root, small / "store")
        shutil.rmtree(small / "store")  # room for the value now
        r6 = zb(vroot, "run")
        assert r6.returncode == 0 and "Using cached version of small." in r6.stdout, r6.stdout
        left += leftovers(vroot, small / "vstore")
        _figures(capsys, "full disk (tmpfs 2500k)", {
            "value write failed cleanly": int(value_clean),
            "output write failed cleanly": int(failed_cleanly),
            "nearly full disk failed cleanly": int(db_full_clean), "corrupt stores": 0,
            "wrong results": 0, "leftovers": len(left)})
        assert left == []
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


CONCURRENT = '''
import os, time
from zenbuild import Output, pipeline, step


@step
def slow(out: Output) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    open(os.path.join(here, "..", "started"), "w").close()
    while not os.access(os.path.join(here, "..", "go"), os.F_OK):  # handshake, not an input
        time.sleep(0.01)
    out.write_text("done")
    return 1


@step
def after(n: int) -> int:
    return n + 1


@pipeline
def both():
    after(slow(Output("out.txt")))
'''


def test_two_runs_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pipe.py").write_text(CONCURRENT)
    (root / "zenbuild.toml").write_text('pipelines = ["pipe:both"]\n')
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    env = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "zenbuild", "run", "--project-dir", str(root)]
    with open(logs[0], "w") as f1:
        one = subprocess.Popen(cmd, stdout=f1, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert one.poll() is None and time.monotonic() < deadline, logs[0].read_text()
        time.sleep(0.01)
    with open(logs[1], "w") as f2:
        two = subprocess.Popen(cmd, stdout=f2, stderr=subprocess.STDOUT, env=env)
    while "waiting for another zenbuild run" not in logs[1].read_text():
        assert two.poll() is None and time.monotonic() < deadline, logs[1].read_text()
        time.sleep(0.01)
    (tmp_path / "go").write_text("")
    assert one.wait(60) == 0 and two.wait(60) == 0
    first, second = logs[0].read_text(), logs[1].read_text()
    assert "Step slow has started." in first and "Using cached version of slow." in second
    assert "Using cached version of after." in second and "has finished" not in second
    v = zb(root, "cache", "verify")
    _figures(capsys, "concurrent runs", {"runs": 2, "second waited": 1,
                                         "corrupt stores": int(v.returncode != 0)})
    assert v.returncode == 0 and (root / "out.txt").read_text() == "done"
