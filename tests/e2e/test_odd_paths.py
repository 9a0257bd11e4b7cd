"""File names that are not UTF-8 (Linux names are bytes; Python hands them over with surrogate
escapes, 'caf\\udce9.csv'): every path zenbuild stores must survive them, losslessly, and a
change of such a file must still be seen. Each shape of the user report (a Dir input, an Output
folder a step writes, an undeclared read or listing, the run's log, a project root) runs
through the real CLI; the stat-cache rows and the run history are checked on their own too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.conftest import Project, Result, sqlite_db
from zenbuild.digest import FileRecord
from zenbuild.paths import storable
from zenbuild.store.db import Store
from zenbuild.store.runs import RunHistory
from zenbuild.store.statrows import ODD_MARK, StatRows, row_path

LATIN1 = b"caf\xe9.csv"  # a name unzipped from a Windows archive
LATIN1_TOO = b"caf\xe8.csv"  # differs from it in the one byte that is not UTF-8
BAD = b"bad\xffname.txt"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="names as bytes: Linux")


def zb(project: Project, *args: str, check: Optional[int] = 0,
       env: Optional[Dict[str, str]] = None) -> Result:
    """conftest's zb, reading the output as bytes: zenbuild writes a name that is not UTF-8
    as its bytes (surrogateescape), which text=True could not decode."""
    full = dict(os.environ, NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    full.pop("CI", None)
    proc = subprocess.run([sys.executable, "-m", "zenbuild", *args, "--project-dir",
                           str(project.root)], capture_output=True, timeout=120, env=full,
                          cwd=project.root)
    res = Result(subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape")))
    assert "Traceback" not in res.output, res
    if check is not None:
        assert proc.returncode == check, res
    return res


def age(*paths: Path) -> None:
    """Date files a minute back, so their stat-cache rows are trusted and saved (a file
    written within the racy window is hashed again instead)."""
    for p in paths:
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))


def stat_paths(project: Project) -> Dict[str, str]:
    """The stat cache as the store loads it: path -> digest."""
    store = Store(str(project.root / ".zenbuild"), create=False)
    try:
        return {p: row[4] for p, row in store.file_records().items()}
    finally:
        store.close()


def read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_bytes_name(folder: Path, name: bytes, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(os.fsencode(folder), name), "wb") as f:
        f.write(data)
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


DIR_PIPE = """\
    import os
    from zenbuild import step, pipeline, Dir
    from ticker import tick

    @step
    def count(d: Dir) -> dict:
        tick("count")
        return {os.fsencode(n): open(os.path.join(d, n), "rb").read() for n in os.listdir(d)}

    @pipeline
    def p():
        count(Dir("data"))
    """


def test_dir_input_with_a_latin1_name_is_cached_and_its_changes_seen(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", DIR_PIPE)
    a = write_bytes_name(project.root / "data", LATIN1, b"x")
    b = write_bytes_name(project.root / "data", LATIN1_TOO, b"y")
    age(a, b)
    assert zb(project, "run").executed == ["count"]
    # the rows were saved under the exact names (not both under 'caf\ufffd.csv')
    rows = stat_paths(project)
    assert rows.keys() >= {"data/" + os.fsdecode(LATIN1), "data/" + os.fsdecode(LATIN1_TOO)}
    r = zb(project, "run")
    assert r.cached == ["count"] and project.ticks() == ["count"]
    assert "up to date" in zb(project, "status").stdout
    # the same size, the mtime put back: only the stat's ctime and the content differ
    st = os.stat(a)
    a.write_bytes(b"z")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "would execute" in zb(project, "status").stdout
    assert zb(project, "run").executed == ["count"]
    assert project.ticks() == ["count"]
    age(a)
    zb(project, "run")
    assert zb(project, "run").cached == ["count"]
    assert "0 damaged rows" in zb(project, "cache", "verify").stdout


OUT_PIPE = """\
    import os
    from zenbuild import step, pipeline, Output
    from ticker import tick

    @step
    def make(out: Output) -> int:
        tick("make")
        os.makedirs(out, exist_ok=True)
        fd = os.open(os.path.join(os.fsencode(out), b"bad\\xffname.txt"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"hello")
        os.close(fd)
        return 1

    @step
    def use(n: int) -> int:
        return n + len(os.listdir(b"out"))

    @pipeline
    def p():
        use(make(Output("out")))
    """


def test_output_folder_with_a_name_that_is_not_utf8_is_restored(project: Project) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", OUT_PIPE)
    bad = os.path.join(os.fsencode(project.root / "out"), BAD)
    assert zb(project, "run").executed == ["make", "use"]
    assert read(bad) == b"hello" and project.ticks() == ["make"]
    for _ in range(2):  # the restore (its log names the file), and each run after it
        os.unlink(bad)
        r = zb(project, "run")
        assert r.cached == ["make", "use"] and project.ticks() == []
        assert read(bad) == b"hello"
        assert os.listdir(os.fsencode(project.root / "out")) == [BAD]
    age(Path(os.fsdecode(bad)))
    zb(project, "run")  # saves its stat row
    assert "out/" + os.fsdecode(BAD) in stat_paths(project)
    with open(bad, "wb") as f:  # a hand edit: restored, the user's version kept in the trash
        f.write(b"edited")
    r = zb(project, "run")
    assert r.cached == ["make", "use"] and read(bad) == b"hello"
    trashed = [os.path.join(d, n) for d, _, ns in os.walk(os.fsencode(project.root / ".zenbuild"
                                                                      / "trash")) for n in ns]
    assert [read(t) for t in trashed] == [b"edited"]
    # the run's history keeps its log, the name shown as its bytes
    log = zb(project, "runs", "show", "last", "--log").stdout
    assert "out/bad\\xffname.txt" in log


READ_PIPE = """\
    import os
    from zenbuild import step, pipeline
    from ticker import tick

    @step
    def reads() -> bytes:
        tick("reads")
        return open(b"data/caf\\xe9.csv", "rb").read()

    @step
    def reads_str() -> bytes:
        tick("reads_str")
        return open(os.fsdecode(b"data/caf\\xe9.csv"), "rb").read()

    @step
    def lists() -> list:
        tick("lists")
        return sorted(os.listdir("data"))

    @pipeline
    def p():
        reads(); reads_str(); lists()
    """


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_undeclared_read_and_listing_of_a_name_that_is_not_utf8(project: Project,
                                                                 jobs: str) -> None:
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", READ_PIPE)
    f = write_bytes_name(project.root / "data", LATIN1, b"abc")
    age(f)
    assert sorted(zb(project, "run", "-j", jobs).executed) == ["lists", "reads", "reads_str"]
    project.ticks()
    assert len(zb(project, "run", "-j", jobs).cached) == 3
    assert project.ticks() == []
    f.write_bytes(b"abcd")  # read by two steps, not declared: both execute again
    out = zb(project, "status").stdout
    assert "read by the step, not declared: data/caf" in out
    assert sorted(zb(project, "run", "-j", jobs).executed) == ["reads", "reads_str"]
    project.ticks()
    write_bytes_name(project.root / "data", LATIN1_TOO, b"")  # the listing changed
    assert zb(project, "run", "-j", jobs).executed == ["lists"]
    assert "0 damaged rows" in zb(project, "cache", "verify").stdout


def test_a_project_root_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """The compiled-code cache is named by the module's path: a root whose name is not
    UTF-8 crashed every command while the project was imported."""
    root = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"proj\xe9")))
    root.mkdir()
    project = Project(root)
    project.write("ticker.py", "def tick(name):\n    pass\n")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", READ_PIPE)
    write_bytes_name(root / "data", LATIN1, b"abc")
    assert len(zb(project, "run").executed) == 3
    assert len(zb(project, "run").cached) == 3
    assert "0 of 3 steps would execute" in zb(project, "status").stdout


def test_a_strict_stdout_shows_a_restored_name_that_is_not_utf8(project: Project) -> None:
    """Under a locale whose stdout is strict (en_US.UTF-8 without UTF-8 mode), a line naming
    the file ("Restored out/bad\\xffname.txt from the store.") crashed the run."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", OUT_PIPE)
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    zb(project, "run", env=strict)
    os.unlink(os.path.join(os.fsencode(project.root / "out"), BAD))
    r = zb(project, "run", env=strict)
    assert "Restored out/" + os.fsdecode(BAD) in r.stdout


CLAIM_PIPE = """\
    import os, signal
    from zenbuild import step, pipeline, Output

    @step
    def make(out: Output) -> int:
        out.write_text("x")
        if os.path.exists(os.environ["KILL_MARK"]):  # the first run is killed here
            os.unlink(os.environ["KILL_MARK"])
            os.kill(os.getpid(), signal.SIGKILL)
        return 1

    @pipeline
    def p():
        make(Output(os.fsdecode(b"res\\xff.txt")))
    """


def test_an_output_named_with_bytes_that_are_not_utf8_is_claimed(project: Project,
                                                                 tmp_path: Path) -> None:
    """STORE/claims lists the Outputs a step's first run found absent: a killed first run's
    output is then known as zenbuild's. A name that is not UTF-8 crashed the claim, and read
    back with U+FFFD would not match, so the next run would refuse the step's own output."""
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", CLAIM_PIPE)
    mark = tmp_path / "kill-mark"
    mark.write_text("")
    r = zb(project, "run", check=None, env={"KILL_MARK": str(mark)})
    assert r.returncode != 0 and not mark.exists()  # killed in the step, after its claim
    assert zb(project, "run", env={"KILL_MARK": str(mark)}).executed == ["make"]
    assert zb(project, "run", env={"KILL_MARK": str(mark)}).cached == ["make"]


# -- the stores themselves ----------------------------------------------------------------------
def test_stat_rows_keep_names_that_are_not_utf8_exactly(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    rows = StatRows(store.db)
    a, b = "d/" + os.fsdecode(LATIN1), "d/" + os.fsdecode(LATIN1_TOO)
    old = FileRecord((1, 10, 7, 10), "a" * 32, 10**18)
    with store.transaction():
        rows.save({"plain.txt": old, a: old, b: FileRecord((2, 10, 8, 10), "b" * 32, 10**18)})
    got = rows.load()
    assert got == {"plain.txt": (1, 10, 7, 10, "a" * 32), a: (1, 10, 7, 10, "a" * 32),
                   b: (2, 10, 8, 10, "b" * 32)}
    # racily clean now: its row goes (the DELETE of a name that is not UTF-8)
    with store.transaction():
        rows.save({a: FileRecord((1, 10**18, 7, 10), "c" * 32, 10**18)})
    assert set(rows.load()) == {"plain.txt", b}
    store.close()
    with sqlite_db(tmp_path / "store" / "zenbuild.db") as db:  # every row clean UTF-8 text
        stored = db.execute("SELECT path, typeof(path) FROM files ORDER BY path").fetchall()
    assert stored == [(row_path(b), "text"), ("plain.txt", "text")]
    assert row_path("plain.txt") == "plain.txt" and row_path(b).startswith(ODD_MARK)


def test_a_damaged_odd_row_is_left_out(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    with store.transaction():
        store.db.execute("INSERT INTO files VALUES (?,1,1,1,1,?,1)", (ODD_MARK + "{nope", "a" * 32))
    assert store.file_records() == {}
    store.close()


def test_run_history_keeps_a_log_naming_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    runs = RunHistory(store.db)
    run_id = runs.begin("pipe:p", {"path": os.fsdecode(BAD)})
    log = "Restored out/" + os.fsdecode(BAD) + " from the store."
    runs.finish(run_id, "succeeded", {"cached": 1}, [], log)
    assert runs.log(run_id) == "Restored out/bad\\xffname.txt from the store."
    assert runs.list()[0]["params"] == {"path": os.fsdecode(BAD)}  # JSON escapes: lossless
    store.close()


def test_storable() -> None:
    assert storable("plain é") == "plain é"
    assert storable(os.fsdecode(b"caf\xe9 \xc3\xa9")) == "caf\\xe9 é"
    assert storable("lone \ud800") == "lone \\ud800"  # no file name gives it; still text
