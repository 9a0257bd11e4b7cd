"""End-to-end: large values through the real CLI: a consumer that writes into its (mapped,
copy-on-write) input changes neither the store nor a sibling's copy, in the run that made the
value and in a later run that loads it; a corrupted stored array is detected and made again,
never served; the peak memory of a run that stores and sums a 400 MiB array stays bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Project

PIPE = '''
import numpy as np
from zenbuild import pipeline, step
from ticker import tick


@step
def make(n: int):
    tick("make")
    return {"a": np.arange(n, dtype=np.float64), "meta": "v1"}


@step
def mutate(d) -> float:
    tick("mutate")
    a = d["a"]
    assert a.flags.writeable and a.flags.aligned
    total = float(a.sum())
    a *= -1.0  # in place
    a[0] = 12345.0
    return total


@step
def sibling(d) -> float:
    tick("sibling")
    return float(d["a"].sum()) + 0


@pipeline
def p(n: int = 300_000):
    d = make(n)
    mutate(d)
    sibling(d)
'''


def _setup(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["big:p"]\n')
    project.write("big.py", PIPE)


READ = (
    "import sys\n"
    "from zenbuild.store.db import Store\n"
    "from zenbuild.serialize import loads\n"
    "s = Store(sys.argv[1], create=False)\n"
    "rows = s.db.execute('SELECT s.step, a.value_digest FROM step_state s JOIN actions a"
    " ON a.fingerprint = s.fingerprint').fetchall()\n"
    "vals = {step: loads(s.map_blob(d)) for step, d in rows}\n"
    "print(vals['mutate'], vals['sibling'], float(vals['make']['a'].sum()),"
    " vals['make']['a'][0])\n"
)


def _stored(project: Project, tmp_path: Path) -> list:
    """What the store holds now: mutate's and sibling's results, the sum and first item of
    make's array (read in another process)."""
    script = tmp_path / "read.py"
    script.write_text(READ)
    out = subprocess.run([sys.executable, str(script), str(project.root / ".zenbuild")],
                         capture_output=True, text=True, check=True, cwd=str(REPO)).stdout
    return [float(x) for x in out.split()]


def test_a_consumer_writing_into_its_input_changes_no_other_copy(project: Project,
                                                                 tmp_path: Path) -> None:
    _setup(project)
    want = float(sum(range(300_000)))
    r = project.run("run")
    assert r.executed == ["make", "mutate", "sibling"]
    assert project.ticks() == ["make", "mutate", "sibling"]
    # sibling ran after mutate had negated its copy in place, in the run that made the
    # value: it saw the original, and so does the store
    assert _stored(project, tmp_path) == [want, want, want, 0.0]
    # the mutating step again (edited), its input mapped from the store
    project.write("big.py", PIPE.replace("total = float(a.sum())", "total = float(a.sum()) + 0"))
    r = project.run("run")
    assert r.executed == ["mutate"] and r.cached == ["make", "sibling"]
    assert project.ticks() == ["mutate"]
    # both consumers again, from the store: sibling runs after mutate's in-place writes
    project.write("big.py", PIPE.replace("total = float(a.sum())", "total = float(a.sum()) + 1")
                  .replace('return float(d["a"].sum()) + 0', 'return float(d["a"].sum()) + 1'))
    r = project.run("run")
    assert r.executed == ["mutate", "sibling"] and r.cached == ["make"]
    assert project.ticks() == ["mutate", "sibling"]
    assert _stored(project, tmp_path) == [want + 1, want + 1, want, 0.0]


def _value_blob(project: Project) -> Path:
    """The file blob of make's value (the only value over 64 KiB)."""
    blobs = [p for p in (project.root / ".zenbuild" / "cas").rglob("*") if p.is_file()]
    assert len(blobs) == 1, blobs
    return blobs[0]


def test_a_corrupt_stored_array_is_made_again_not_served(project: Project) -> None:
    _setup(project)
    project.run("run")
    project.ticks()
    blob = _value_blob(project)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, inside the array payload
    blob.write_bytes(bytes(data))
    # only the consumer's code changes: it must load make's value, finds it corrupt,
    # and the run starts again with make executing
    project.write("big.py", PIPE.replace("total = float(a.sum())", "total = float(a.sum()) * 1"))
    r = project.run("run")
    assert "corrupt" in r.output.lower()
    assert "make" in r.executed and "mutate" in r.executed
    assert project.ticks().count("make") == 1
    fixed = _value_blob(project)
    assert fixed.read_bytes() != bytes(data)
    r = project.run("run")
    assert r.executed == [] and r.cached == ["make", "mutate", "sibling"]


MEASURE = r'''
import resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "zenbuild", *sys.argv[1:]], capture_output=True,
                   text=True)
sys.stderr.write(r.stdout + r.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB, the zenbuild run's peak
sys.exit(r.returncode)
'''

BIG = '''
import numpy as np
from zenbuild import pipeline, step


@step
def make(n: int):
    return np.ones(n, dtype=np.float64)


@step
def total(a) -> float:
    return float(a.sum())


@pipeline
def p(n: int = 52_428_800):  # 400 MiB of float64
    total(make(n))
'''


def _peak_mib(project: Project, tmp_path: Path) -> float:
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    r = subprocess.run([sys.executable, str(script), "run", "--project-dir", str(project.root)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip()) / 1024


def test_peak_memory_of_a_400_mib_array_run_is_bounded(project: Project, tmp_path: Path) -> None:
    project.write("zenbuild.toml", 'pipelines = ["big:p"]\n')
    project.write("big.py", BIG)
    cold = _peak_mib(project, tmp_path)
    # the consumer alone again: the array is mapped from the store, not read into memory
    project.write("big.py", BIG.replace("return float(a.sum())", "return float(a.sum()) + 0"))
    warm = _peak_mib(project, tmp_path)
    # 400 MiB array: store format 2 peaked at ~2,040 MiB cold and ~1,630 MiB here (issue 13);
    # the target is 1.3x the array + 60 MiB = 580 MiB; the ceiling leaves room for the
    # interpreter and its libraries on other machines
    assert cold < 700, cold
    assert warm < 700, warm


def test_the_python_api_output_is_mapped_not_copied(project: Project) -> None:
    """StepResult.output maps the stored blob copy-on-write, as a consumer step's input is: an
    array comes back without a copy of its bytes, and writing into it changes no other load."""
    import mmap
    import os

    import numpy as np

    from zenbuild.result import StepResult
    from zenbuild.store.db import Store

    _setup(project)
    project.run("run", "--param", "n=2000000")  # 16 MB: a file blob, not inline
    store = Store(str(project.root / ".zenbuild"), create=False)
    try:
        digest = store.db.execute(
            "SELECT value_digest FROM actions WHERE step = 'make'").fetchone()[0]
    finally:
        store.close()
    res = StepResult("make", "cached", value_digest=digest,
                     store_path=str(project.root / ".zenbuild"))
    a = res.output["a"]
    base = a
    while not isinstance(base, mmap.mmap):  # array -> ... -> memoryview -> the mapping
        nxt = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if nxt is None:
            break
        base = nxt
    assert isinstance(base, mmap.mmap), type(base)  # the store's pages, not a copy
    a[:] = -1.0
    assert res.output["a"][:3].tolist() == [0.0, 1.0, 2.0]  # a new load: the store's bytes
    assert os.path.exists(project.root / ".zenbuild") and np.asarray(a).dtype == np.float64


TRANSPOSED = '''
import numpy as np
from zenbuild import pipeline, step


@step
def make(n: int):
    a = np.ones((n // 1024, 1024), dtype=np.float64)
    a[1, 2] = 5.0
    return a.T  # Fortran-ordered: no C-contiguous memory to write from


@step
def corner(a) -> list:
    return [a.shape[0], a.shape[1], float(a[2, 1]), bool(a.flags.c_contiguous)]


@pipeline
def p(n: int = 52_428_800):  # 400 MiB of float64
    corner(make(n))
'''


def test_a_transposed_400_mib_array_is_stored_without_a_whole_copy(project: Project,
                                                                     tmp_path: Path) -> None:
    """An array that is not C-contiguous is written in C order a piece at a time: storing a
    400 MiB transpose peaked at ~840 MiB when it was copied whole first (the array and its
    copy), ~455 MiB now. Its consumer sees the transpose."""
    project.write("zenbuild.toml", 'pipelines = ["big:p"]\n')
    project.write("big.py", TRANSPOSED)
    peak = _peak_mib(project, tmp_path)
    assert peak < 700, peak
    project.write("big.py", TRANSPOSED.replace(
        "    return [a.shape[0]", "    print('corner', [a.shape[0], a.shape[1], float(a[2, 1])])"
        "\n    return [a.shape[0]"))
    r = project.run("run")  # the consumer alone: the array comes back from its blob
    assert r.cached == ["make"] and r.executed == ["corner"], r.output
    assert "corner [1024, 51200, 5.0]" in r.output, r.output
