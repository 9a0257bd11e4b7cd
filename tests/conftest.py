"""Shared fixtures: make projects in tmp_path and drive the real CLI on them."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pytest

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def sqlite_db(path: Union[str, os.PathLike[str]]) -> Iterator[sqlite3.Connection]:
    """A plain connection to a store's database, for a test to read or damage it: what the
    block wrote is committed (rolled back if it raised) and the connection is closed either
    way. ``with sqlite3.connect(path) as db`` only commits, leaving the connection open, which
    Python 3.13 reports as a ResourceWarning (an error under the suite's filterwarnings)."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()

# A tiny helper every test project can import: each step calls tick("name") so tests can count
# how many times each step really executed (as redo's tests do). The log lives beside the
# project folder, not in it: a file a step writes in the project is an undeclared write, which
# zenbuild warns about (and the test harness's own log is no part of the project under test).
TICK = '''\
import os


def tick(name):
    here = os.path.dirname(os.path.abspath(__file__))
    log = os.path.join(os.path.dirname(here), os.path.basename(here) + ".ticks.log")
    with open(log, "a") as f:
        f.write(name + "\\n")
'''


class Project:
    """A project folder under tmp_path with helpers to write files and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
        return p

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def ticks(self, reset: bool = True) -> List[str]:
        p = self.root.parent / (self.root.name + ".ticks.log")
        if not p.exists():
            return []
        out = p.read_text().split()
        if reset:
            p.unlink()
        return out

    def run(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
            check: Optional[int] = 0) -> Result:
        return zb(*args, "--project-dir", str(self.root), env=env, timeout=timeout, check=check)

    def cli(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
            check: Optional[int] = 0) -> Result:
        """Run a command as given (no --project-dir appended), with cwd = project root."""
        return zb(*args, env=env, timeout=timeout, check=check, cwd=self.root)


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.output = proc.stdout + proc.stderr

    @property
    def executed(self) -> List[str]:
        return re.findall(r"^Step (\S+) has finished in", self.output, re.M)

    @property
    def cached(self) -> List[str]:
        return re.findall(r"^Using cached version of (\S+)\.$", self.output, re.M)

    @property
    def started(self) -> List[str]:
        return re.findall(r"^Step (\S+) has started\.$", self.output, re.M)

    def __repr__(self) -> str:
        return f"<exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}>"


def zb(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
       check: Optional[int] = 0, cwd: Optional[Path] = None) -> Result:
    full_env = dict(os.environ)
    full_env.pop("CI", None)
    full_env["NO_COLOR"] = "1"
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "zenbuild", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env,
        cwd=str(cwd) if cwd else None,
    )
    res = Result(proc)
    if check is not None:
        assert proc.returncode == check, res
    return res


def stored(tmp_path: Path, value: object) -> Tuple[object, str]:
    """``value`` put in a new store under ``tmp_path`` as a run stores it, and that store
    opened again (the caller closes it): (store, the value's digest)."""
    from zenbuild.serialize.buffers import encode_value
    from zenbuild.store.db import Store

    store = Store(str(tmp_path / "store"))
    digest = store.put_value(encode_value(value).parts)
    store.close()
    return Store(str(tmp_path / "store"), create=False), digest


def imported_by_run(root: Path, modules: Sequence[str], *args: str) -> Tuple[int, List[bool]]:
    """Run `zenbuild run -q ARGS` through the CLI's main() in a fresh interpreter: its exit
    code, and whether each of ``modules`` had been imported by the end."""
    code = (
        "import sys\n"
        "from zenbuild.cli.entry import main\n"
        "try:\n"
        f"    main(['run', '-q', *{list(args)!r}, '--project-dir', {str(root)!r}])\n"
        "    code = 0\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print('EXIT', code, *(m in sys.modules for m in {tuple(modules)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("EXIT ")]
    assert line, out
    words = line[-1].split()
    return int(words[1]), [w == "True" for w in words[2:]]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    p = Project(root)
    p.write("ticker.py", TICK)
    return p
