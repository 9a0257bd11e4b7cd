"""Property: over random DAGs and random edits, an incremental run leaves exactly what a clean
run leaves (correct), and executes exactly the steps whose inputs changed (minimal)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zenbuild import File, Output, pipeline, step
from zenbuild.events import Reporter
from zenbuild.project import load_project
from zenbuild.run import run_bound

EXECUTED: List[str] = []
N_FILES = 3


@step
def combine(name: str, const: int, ups: list, files: list, out: Any) -> Tuple[int, int, int]:
    EXECUTED.append(name)
    value = (const % 3, sum(sum(u) for u in ups) % 4, sum(len(f.read_bytes()) for f in files) % 5)
    if out is not None:
        out.write_text(repr(value))
    return value


@pipeline
def dag(spec: list, consts: dict):
    handles: Dict[int, Any] = {}
    for i, (deps, files, writes) in enumerate(spec):
        handles[i] = combine(
            f"s{i}",
            consts[str(i)],
            [handles[d] for d in deps],
            [File(f"data/f{j}.txt") for j in files],
            Output(f"build/s{i}.txt") if writes else None,
        )


class Silent(Reporter):
    def handle(self, event: Any) -> None:
        pass


def run(root: Path, spec: list, consts: dict) -> Tuple[List[str], Any]:
    EXECUTED.clear()
    config = load_project(str(root))
    result = run_bound(dag(spec, consts), config=config, reporter=Silent())
    assert result.status == "succeeded"
    return list(EXECUTED), result


def snapshot(root: Path, result: Any) -> Dict[str, Any]:
    out = {name: s.output for name, s in result.steps.items()}
    build = root / "build"
    files = {p.name: p.read_text() for p in sorted(build.glob("*.txt"))} if build.exists() else {}
    return {"values": out, "files": files}


@st.composite
def dags(draw):
    n = draw(st.integers(2, 6))
    spec = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else []
        files = sorted(draw(st.sets(st.integers(0, N_FILES - 1), max_size=2)))
        spec.append((deps, files, draw(st.booleans())))
    return spec


edits = st.lists(
    st.one_of(
        st.tuples(st.just("const"), st.integers(0, 5), st.integers(0, 6)),
        st.tuples(st.just("file"), st.integers(0, N_FILES - 1), st.integers(0, 9)),
        st.tuples(st.just("touch"), st.integers(0, N_FILES - 1), st.just(0)),
        st.tuples(st.just("rm_output"), st.integers(0, 5), st.just(0)),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=dags(), changes=edits, seed=st.integers(0, 6))
def test_incremental_equals_clean_and_is_minimal(spec, changes, seed):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        (root / "data").mkdir(parents=True)
        (root / "zenbuild.toml").write_text("")
        for j in range(N_FILES):
            (root / f"data/f{j}.txt").write_text("x" * (j + seed))
        consts = {str(i): seed for i in range(len(spec))}
        executed, result = run(root, spec, consts)
        assert executed == [f"s{i}" for i in range(len(spec))]
        seen = {(f"s{i}", sig) for i, sig in signatures(root, spec, consts).items()}

        for kind, a, b in changes:
            if kind == "const" and a < len(spec):
                consts = {**consts, str(a): b}
            elif kind == "file":
                (root / f"data/f{a}.txt").write_text("y" * b)
            elif kind == "touch":
                p = root / f"data/f{a}.txt"
                p.write_bytes(p.read_bytes())
            elif kind == "rm_output":
                (root / f"build/s{a}.txt").unlink(missing_ok=True)
            sigs = signatures(root, spec, consts)
            expected = [f"s{i}" for i in range(len(spec)) if (f"s{i}", sigs[i]) not in seen]
            seen |= {(f"s{i}", sig) for i, sig in sigs.items()}

            executed, result = run(root, spec, consts)
            assert executed == expected  # minimal: only steps whose inputs changed
            incremental = snapshot(root, result)

            clean = Path(tmp) / "clean"
            shutil.rmtree(clean, ignore_errors=True)
            shutil.copytree(root, clean, ignore=shutil.ignore_patterns(".zenbuild", "build"))
            _, clean_result = run(clean, spec, consts)
            assert incremental == snapshot(clean, clean_result)  # correct


def signatures(root: Path, spec: list, consts: dict) -> Dict[int, Any]:
    """The model: what each step's result depends on, computed without zenbuild."""
    values: Dict[int, Tuple[int, int, int]] = {}
    sigs: Dict[int, Any] = {}
    for i, (deps, files, _writes) in enumerate(spec):
        contents = tuple((root / f"data/f{j}.txt").read_bytes() for j in files)
        ups = tuple(values[d] for d in deps)
        sigs[i] = (consts[str(i)], ups, contents)
        values[i] = (
            consts[str(i)] % 3,
            sum(sum(u) for u in ups) % 4,
            sum(len(c) for c in contents) % 5,
        )
    return sigs
