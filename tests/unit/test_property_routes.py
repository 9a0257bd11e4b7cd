"""Property (issue 10): for every route by which a step reaches code or data, an incremental
run after any edits leaves exactly what a clean run in a fresh store leaves (correct), and
executes exactly the steps whose inputs changed (minimal): a semantic or data edit of a target
runs the step that reaches it and its consumer, a cosmetic edit, an unrelated helper's edit and
a touch run nothing, and a revert is served from the store. Every run uses another
PYTHONHASHSEED, so a value whose digest depends on it (a set, a dataclass holding one) shows
up as a step that executed for no reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.routes import MAIN_ROUTE, Route, all_routes, pipeline_files

ROUTES = {r.name: r for r in all_routes()}
NAMES = sorted(ROUTES)
KINDS = ["semantic", "data", "cosmetic", "unrelated", "touch", "revert"]
State = Tuple[int, int]  # (semantic edit applied, data edit applied)
LINE = re.compile(
    r"^(?:Step (\S+) has (started)\.|Step (\S+) has (finished) in .*"
    r"|Using (cached) version of (\S+)\.)$"
)


class Generated:
    """The generated project on disk (the root with its store, and the folder outside the root
    on PYTHONPATH), and per route the model state of the edits applied so far."""

    def __init__(self, base: Path, routes: List[Route], script: Optional[str] = None) -> None:
        self.base = base
        self.root = base / "proj"
        self.ext = base / "ext"
        self.routes = {r.name: r for r in routes}
        self.script = script
        self.files = files = pipeline_files(routes) if script is None else dict(routes[0].files)
        self.steps: Tuple[str, ...] = ("other",) + tuple(s for r in routes for s in r.steps)
        self.originals: Dict[Path, bytes] = {}
        self.state: Dict[str, State] = {name: (0, 0) for name in self.routes}
        self.runs = 0
        self.edits = 0
        for rel, text in files.items():
            p = self.path(rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.originals[p] = text.encode()

    def path(self, rel: str, root: Optional[Path] = None) -> Path:
        return self.ext / rel[4:] if rel.startswith("ext/") else (root or self.root) / rel

    def run(self, root: Optional[Path] = None) -> Tuple[List[str], Dict[str, str]]:
        """Run the pipeline in ``root`` through the real CLI (or ``python script.py``), under a
        new PYTHONHASHSEED each time; return the steps that executed and the output files."""
        root = root or self.root
        self.runs += 1
        env = dict(os.environ)
        env.pop("CI", None)
        env.update(NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED=str(self.runs))
        env["PYTHONPATH"] = os.pathsep.join([str(self.ext), env.get("PYTHONPATH", "")])
        if self.script:
            cmd = [sys.executable, self.script]
        else:
            cmd = [sys.executable, "-m", "zenbuild", "run", "--project-dir", str(root)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, env=env, cwd=str(root)
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        outputs = {name: (root / f"build/{name}.txt").read_text() for name in self.routes}
        return executed(out, self.steps), outputs

    def clean_run(self) -> Dict[str, str]:
        """The same sources in a fresh folder with a fresh store: everything executes."""
        clean = self.base / f"clean{self.runs}"
        shutil.copytree(
            self.root, clean, ignore=shutil.ignore_patterns(".zenbuild", "build", "__pycache__")
        )
        ran, outputs = self.run(clean)
        assert sorted(ran) == sorted(self.steps), ran
        shutil.rmtree(clean)
        return outputs

    def apply(self, name: str, kind: str) -> bool:
        """Apply one edit to one route; False if the route has no such edit (no data file)."""
        self.edits += 1
        n = self.edits
        r = self.routes[name]
        if kind == "semantic":
            self.toggle(name, r.semantic, 0)
        elif kind == "data":
            if r.data is None:
                return False
            self.toggle(name, r.data, 1)
        elif kind == "cosmetic":
            self.rewrite(r.target, lambda t: cosmetic(t, n))
        elif kind == "unrelated":
            self.rewrite(
                r.target,
                lambda t: re.sub(r"return \d+  # unrelated", f"return {n}  # unrelated", t),
            )
        elif kind == "touch":  # same bytes, a later mtime
            for rel in r.files:
                p = self.path(rel)
                data = p.read_bytes()
                p.write_bytes(data)
                st_ = p.stat()
                os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns + n * 1_000_000_000))
        elif kind == "revert":
            for rel in r.files:
                self.path(rel).write_bytes(self.originals[self.path(rel)])
            self.state[name] = (0, 0)
        else:
            raise AssertionError(kind)
        return True

    def toggle(self, name: str, edit: Tuple[str, str, str], axis: int) -> None:
        rel, old, new = edit
        on = self.state[name][axis]
        src, dst = (new, old) if on else (old, new)
        self.rewrite(rel, lambda t: t.replace(src, dst))
        s = list(self.state[name])
        s[axis] = 1 - on
        self.state[name] = (s[0], s[1])

    def rewrite(self, rel: str, change: Callable[[str], str]) -> None:
        p = self.path(rel)
        text = p.read_text()
        new = change(text)
        assert new != text, (rel, text)  # the edit must really change the file
        p.write_text(new)


def cosmetic(text: str, n: int) -> str:
    """Comments, blank lines and docstrings only: what the code does is unchanged."""
    text = re.sub(
        r'^"""Route target module[^"]*"""\n',
        f'"""Route target module, reworded {n}."""\n# a comment {n}\n\n',
        text,
        count=1,
    )
    text = re.sub(r'"""Target[^"]*"""', f'"""Target, reworded {n}."""', text)
    text = re.sub(r"# cosmetic[^\n]*", f"# cosmetic {n}", text)
    return text + f"\n\n# trailing comment {n}\n"


def executed(output: str, steps: Tuple[str, ...]) -> List[str]:
    """The steps that executed: each step's `has started.` line is followed by its `has
    finished` line (executed) or its `Using cached version` line (cached), exactly once."""
    started: Set[str] = set()
    ran: List[str] = []
    cached: List[str] = []
    for line in output.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        if m.group(2):
            assert m.group(1) not in started, output
            started.add(m.group(1))
        elif m.group(4):
            assert m.group(3) in started, output
            ran.append(m.group(3))
        else:
            assert m.group(6) in started, output
            cached.append(m.group(6))
    assert sorted(ran + cached) == sorted(steps) and started == set(steps), output
    return ran


Round = Dict[str, str]  # route name -> edit kind


def check_rounds(gen: Generated, rounds: List[Round]) -> None:
    """Apply each round's edits, run, and compare with the model and with a clean run."""
    ran, outputs = gen.run()
    assert sorted(ran) == sorted(gen.steps)
    clean: Dict[Tuple[str, State], str] = {(name, (0, 0)): out for name, out in outputs.items()}
    failures: List[str] = []
    for i, edits in enumerate(rounds):
        edits = {name: kind for name, kind in edits.items() if gen.apply(name, kind)}
        expected = sorted(
            step
            for name, r in gen.routes.items()
            for step in (r.steps if (name, gen.state[name]) not in clean else r.always)
        )
        ran, outputs = gen.run()
        if any((name, s) not in clean for name, s in gen.state.items()):
            for name, out in gen.clean_run().items():
                clean.setdefault((name, gen.state[name]), out)
        where = f"round {i}"
        for name in gen.routes:
            values = [v for (n, s), v in clean.items() if n == name]
            assert len(set(values)) == len(values), (name, values)  # the states' values differ
            want = sorted(s for s in expected if s in gen.routes[name].steps)
            got = sorted(s for s in ran if s in gen.routes[name].steps)
            if got != want:
                failures.append(
                    f"{where}: route {name} after {edits.get(name, 'no edit')}: "
                    f"executed {got}, expected {want}"
                )
            if outputs[name] != clean[(name, gen.state[name])]:
                failures.append(
                    f"{where}: route {name} after {edits.get(name, 'no edit')}: "
                    f"output {outputs[name]!r}, a clean run gives "
                    f"{clean[(name, gen.state[name])]!r}"
                )
        if "other" in ran:
            failures.append(f"{where}: `other`, which reaches no target, executed")
    assert not failures, "\n".join(failures)


def every(kind: str, names: List[str]) -> Round:
    return {name: kind for name in names}


def test_every_route_every_edit(tmp_path: Path) -> None:
    """Each edit on every route at once (semantic edits on alternate routes, so a step of
    another route that executes too is seen), then back to the original sources."""
    evens, odds = NAMES[::2], NAMES[1::2]
    check_rounds(
        Generated(tmp_path, list(ROUTES.values())),
        [
            {},  # nothing changed but PYTHONHASHSEED: nothing executes
            every("cosmetic", NAMES),
            every("unrelated", NAMES),
            every("touch", NAMES),
            every("semantic", evens),
            every("semantic", odds),
            every("data", NAMES),
            every("cosmetic", NAMES),
            every("revert", NAMES),
        ],
    )


def test_helper_defined_in_main_of_a_script(tmp_path: Path) -> None:
    """`python script.py` whose `__main__` defines the helper and calls `p().run()`."""
    check_rounds(
        Generated(tmp_path, [MAIN_ROUTE], script="script.py"),
        [
            every(k, ["main"])
            for k in ["cosmetic", "unrelated", "touch", "semantic", "cosmetic", "revert"]
        ],
    )


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # a shrink would rerun the CLI hundreds of times
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rounds=st.lists(
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(KINDS), min_size=1, max_size=6),
        min_size=2,
        max_size=4,
    )
)
def test_random_edits_on_random_routes(
    rounds: List[Round], tmp_path_factory: pytest.TempPathFactory
) -> None:
    check_rounds(Generated(tmp_path_factory.mktemp("routes"), list(ROUTES.values())), rounds)
