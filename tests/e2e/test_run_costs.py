"""Counted costs of a run (never timed): how many times a cold run opens each file, through the
real CLI in a fresh interpreter with an audit hook counting ``open`` events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from tests.conftest import Project

N = 4
_WRITING = os.O_WRONLY | os.O_RDWR

PIPELINE = '''\
from pathlib import Path

from zenbuild import File, Output, pipeline, step


@step
def make(src: File, out: Output) -> int:
    data = Path(src).read_bytes()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(data.upper())
    return len(data)


@pipeline
def p():
    for i in range({n}):
        make(File(f"data/in{{i}}.txt"), Output(f"build/out{{i}}.txt"))
'''


def _opens(root: Path) -> Dict[str, Any]:
    """Run `zenbuild run -q` through main() in a fresh interpreter: its exit code and how
    many times each file under ``root`` was opened (by path, relative), and how (flags)."""
    code = (
        "import json, os, sys\n"
        "opens = {}\n"
        f"root = {str(root)!r} + os.sep\n"
        "def hook(event, args):\n"
        "    if event == 'open' and args and isinstance(args[0], (str, os.PathLike)):\n"
        "        p = os.fspath(args[0])\n"
        "        if isinstance(p, str) and p.startswith(root):\n"
        "            opens.setdefault(p[len(root):], []).append(args[2] if len(args) > 2 else 0)\n"
        "sys.addaudithook(hook)\n"
        "from zenbuild.cli.entry import main\n"
        "try:\n"
        f"    main(['run', '-q', '--project-dir', {str(root)!r}])\n"
        "    code = 0\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('OPENS', json.dumps({'exit': code, 'opens': opens}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("OPENS ")]
    assert line, out
    got: Dict[str, Any] = json.loads(line[-1][len("OPENS "):])
    return got


def test_cold_run_opens_the_claims_file_once(project: Project) -> None:
    """Each Output is claimed before its step first runs (STORE/claims, appended so a killed
    run's partial output is still zenbuild's): N steps append N lines through one open."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPELINE.format(n=N))
    for i in range(N):
        project.write(f"data/in{i}.txt", f"input {i}\n")
    got = _opens(project.root)
    assert got["exit"] == 0
    claims = got["opens"].get(".zenbuild/claims", [])
    # read once (what was claimed before: nothing, the file does not exist yet), appended to
    # through one open for writing
    assert len([f for f in claims if f & _WRITING]) == 1, got["opens"]
    assert len(claims) == 2, got["opens"]
    text = (project.root / ".zenbuild" / "claims").read_text()
    assert sorted(text.splitlines()) == [f"build/out{i}.txt" for i in range(N)]
    # every step ran, and its output is what it wrote
    for i in range(N):
        assert project.read(f"build/out{i}.txt") == f"INPUT {i}\n"
    # the declared inputs: hashed once for the key and read once by the step, nothing more
    for i in range(N):
        assert len(got["opens"][f"data/in{i}.txt"]) == 2, got["opens"]

    # outputs deleted: restored from the store, their steps' entries list them, so the
    # claims file is not even read
    for i in range(N):
        (project.root / f"build/out{i}.txt").unlink()
    again = _opens(project.root)
    assert again["exit"] == 0
    assert ".zenbuild/claims" not in again["opens"], again["opens"]
    assert (project.root / ".zenbuild" / "claims").read_text() == text
    for i in range(N):
        assert project.read(f"build/out{i}.txt") == f"INPUT {i}\n"
