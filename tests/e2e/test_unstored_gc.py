"""End-to-end: `zenbuild cache gc` prunes STORE/unstored. A step with an Output that fails
adds a line per output file on every failed run (so that its next run overwrites what it
wrote without a trash copy); nothing removed them, so the file only grew. gc keeps the line
that still matches the file on disk and drops the rest (the file goes when none is left)."""

from __future__ import annotations

import json
import os

PIPE = '''
from zenbuild import Output, pipeline, step
from ticker import tick

FAIL = {fail}


@step
def write(out: Output, attempt: int = 0) -> None:
    tick("write")
    out.write_text(f"attempt {{attempt}}")
    if FAIL:
        raise RuntimeError("the step failed after writing its output")


@pipeline
def p(attempt: int = 0):
    write(Output("out.txt"), attempt=attempt)
'''


def _lines(project) -> list:
    path = project.root / ".zenbuild" / "unstored"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cache_gc_prunes_the_lines_no_file_matches(project):
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", PIPE.format(fail=True))
    for attempt in range(3):  # three failed runs, each writing out.txt anew
        project.run("run", "--param", f"attempt={attempt}", check=1)
    assert [rel for rel, _ in _lines(project)] == ["out.txt"] * 3
    r = project.run("cache", "gc")
    assert "pruned 2 stale lines" in r.output, r
    lines = _lines(project)
    assert [rel for rel, _ in lines] == ["out.txt"]
    st = os.stat(project.root / "out.txt")
    assert lines[0][1] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    # the line gc kept still says the file is the step's: its next run overwrites it, no trash
    project.write("pipe.py", PIPE.format(fail=False))
    r = project.run("run", "--param", "attempt=3")
    assert project.ticks()[-1] == "write" and "moved your version" not in r.output, r
    assert not (project.root / ".zenbuild" / "trash").exists()
    assert (project.root / "out.txt").read_text() == "attempt 3"
    r = project.run("cache", "gc")  # that run rewrote the file: the line is stale too
    assert "pruned 1 stale lines" in r.output, r
    assert not (project.root / ".zenbuild" / "unstored").exists()
    r = project.run("cache", "gc")
    assert "pruned" not in r.output, r
