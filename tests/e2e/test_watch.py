"""End-to-end: `zenbuild watch` as a subprocess with the real watchdog observer, in tmp_path.

Every wait on its output is bounded; none sleeps a fixed time and hopes."""

from __future__ import annotations

import os
import py_compile
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import REPO, Project, zb

PIPE = '''
from zenbuild import File, Output, pipeline, step
from ticker import tick
import helpers


@step
def load_a(src: File) -> str:
    tick("load_a")
    return src.read_text()


@step
def load_b(src: File) -> str:
    tick("load_b")
    return src.read_text()


@step
def shout(text: str) -> str:
    tick("shout")
    return helpers.shout(text)


@step
def count(text: str) -> int:
    tick("count")
    return helpers.count(text)


@step
def report(loud: str, n: int, out: Output) -> None:
    tick("report")
    out.write_text(f"{loud}|{n}\\n")


@pipeline
def demo():
    loud = shout(load_a(File("a.txt")))
    report(loud, count(load_b(File("b.txt"))), Output("build/report.txt"))
'''

HELPERS = '''
def shout(text):
    return text.strip().upper() + "!"


def count(text):
    return len(text) * 1
'''

SUMMARY = re.compile(r"^\d+ executed, \d+ cached.* in \d+\.\d\ds$")
WAIT = 30.0  # generous: these machines are shared; a healthy run takes well under a second


def make_project(project: Project) -> Project:
    project.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n')
    project.write("pipe.py", PIPE)
    project.write("helpers.py", HELPERS)
    project.write("a.txt", "hello\n")
    project.write("b.txt", "four\n")
    return project


class Watch:
    """`zenbuild watch` in its own session; its merged output read line by line."""

    def __init__(self, project: Project, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        full_env = dict(os.environ)
        full_env.update({"NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1",
                         "PYTHONPATH": str(REPO)})
        full_env.update(env or {})
        self.project = project
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zenbuild", "watch", "--project-dir", str(project.root), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env=full_env, start_new_session=True,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.log: List[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: str, timeout: float = WAIT) -> List[str]:
        """Lines up to and including the first one matching ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        got: List[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n"
                                     + "\n".join(self.log)) from None
            if line is None:
                raise AssertionError(f"watch exited ({self.proc.poll()}) before {pattern!r}; "
                                     "output:\n" + "\n".join(self.log))
            self.log.append(line)
            got.append(line)
            if rx.search(line):
                return got

    def rebuild(self) -> List[str]:
        """The lines of the next rebuild: from its `changed:` header to its summary line."""
        head = self.until(r"^changed: ")
        return head[-1:] + self.until(SUMMARY.pattern)

    def ready(self) -> List[str]:
        return self.until(r"^watching \d+ files? in \d+ folders?")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.reader.join(WAIT)


def executed(lines: List[str]) -> List[str]:
    return [m.group(1) for m in (re.match(r"^Step (\S+) has finished in", x) for x in lines) if m]


def cached(lines: List[str]) -> List[str]:
    return [m.group(1) for m in (re.match(r"^Using cached version of (\S+)\.$", x) for x in lines) if m]


@pytest.fixture
def demo(project: Project) -> Project:
    return make_project(project)


@pytest.fixture
def watch(demo: Project):
    started: List[Watch] = []

    def start(*args: str, env: Optional[Dict[str, str]] = None) -> Watch:
        w = Watch(demo, *args, env=env)
        started.append(w)
        first = w.until(SUMMARY.pattern)
        assert sorted(executed(first)) == ["count", "load_a", "load_b", "report", "shout"], first
        w.ready()
        demo.ticks()
        return w

    yield start
    for w in started:
        assert w.stop() == 0, "\n".join(w.log)


def test_input_edit_reruns_only_its_dependents(demo: Project, watch) -> None:
    w = watch()
    demo.write("a.txt", "bye\n")
    lines = w.rebuild()
    assert lines[0] == "changed: a.txt"
    assert executed(lines) == ["load_a", "shout", "report"]
    assert sorted(cached(lines)) == ["count", "load_b"]
    assert demo.read("build/report.txt") == "BYE!|5\n"
    assert sorted(demo.ticks()) == ["load_a", "report", "shout"]


def test_helper_edit_in_second_module_reruns_its_callers_even_with_a_stale_pyc(
        demo: Project, watch) -> None:
    # A .pyc whose recorded mtime (whole seconds) and size still match the edited source is what
    # a plain import would run: the watcher must compile the project's modules from source.
    helpers = demo.root / "helpers.py"
    py_compile.compile(str(helpers), doraise=True)
    w = watch(env={"ZENBUILD_WATCH_EXEC": "spawn"})  # the fresh-interpreter runner, too
    before = os.stat(helpers)
    helpers.write_text(HELPERS.replace('+ "!"', '+ "?"'))  # same size
    os.utime(helpers, ns=(before.st_atime_ns, before.st_mtime_ns))
    lines = w.rebuild()
    assert lines[0] == "changed: helpers.py"
    assert executed(lines) == ["shout", "report"]
    assert demo.read("build/report.txt") == "HELLO?|5\n"


def test_fork_runner_sees_a_same_size_helper_edit_too(demo: Project, watch) -> None:
    helpers = demo.root / "helpers.py"
    py_compile.compile(str(helpers), doraise=True)
    w = watch(env={"ZENBUILD_WATCH_EXEC": "fork"})
    before = os.stat(helpers)
    helpers.write_text(HELPERS.replace("* 1", "* 2"))
    os.utime(helpers, ns=(before.st_atime_ns, before.st_mtime_ns))
    lines = w.rebuild()
    assert executed(lines) == ["count", "report"]
    assert demo.read("build/report.txt") == "HELLO!|10\n"


def test_comment_only_edit_reruns_nothing_and_says_so(demo: Project, watch) -> None:
    w = watch()
    demo.write("helpers.py", HELPERS.replace("def count", "# a comment\n\n\ndef count"))
    lines = w.rebuild()
    assert executed(lines) == []
    assert w.until(r"^nothing reran")[-1] == "nothing reran: the change affects no step."
    assert demo.ticks() == []


def test_atomic_save_via_temp_file_and_rename(demo: Project, watch) -> None:
    w = watch()
    tmp = demo.root / ".b.txt.swp"
    tmp.write_text("seventeen chars!\n")
    os.replace(tmp, demo.root / "b.txt")
    lines = w.rebuild()
    assert lines[0] == "changed: b.txt"
    assert executed(lines) == ["load_b", "count", "report"]
    assert demo.read("build/report.txt") == "HELLO!|17\n"


def test_syntax_error_is_reported_then_the_fix_rebuilds(demo: Project, watch) -> None:
    w = watch()
    demo.write("helpers.py", HELPERS + "\ndef broken(:\n    pass\n")
    lines = w.until(r"^waiting for the next save\.$")
    text = "\n".join(lines)
    assert "syntax error in helpers.py line" in text, text
    assert executed(lines) == []
    demo.write("helpers.py", HELPERS.replace('+ "!"', '+ "!!"'))
    lines = w.rebuild()
    assert executed(lines) == ["shout", "report"]
    assert demo.read("build/report.txt") == "HELLO!!|5\n"


def test_import_error_is_reported_then_the_fix_rebuilds(demo: Project, watch) -> None:
    w = watch()
    demo.write("helpers.py", "import no_such_module_zb\n" + HELPERS)
    lines = w.until(r"^waiting for the next save\.$")
    assert any("no_such_module_zb" in x for x in lines), lines
    demo.write("helpers.py", HELPERS)  # back as it was: the store still has every result
    lines = w.rebuild()
    assert executed(lines) == []
    assert w.until(r"^nothing reran")[-1] == "nothing reran: every step is up to date again."


def test_a_module_in_a_new_folder_is_watched_once_imported(demo: Project, watch) -> None:
    w = watch()
    demo.write("lib/__init__.py", "")
    demo.write("lib/extra.py", "MARK = '!'\n")
    demo.write("helpers.py", "from lib import extra\n" + HELPERS.replace('"!"', "extra.MARK * 2"))
    lines = w.rebuild()
    assert executed(lines) == ["shout", "report"]
    w.ready()  # the watch set grew: lib/ is watched now
    demo.write("lib/extra.py", "MARK = '#'\n")
    lines = w.rebuild()
    assert lines[0] == "changed: lib/extra.py"
    assert executed(lines) == ["shout", "report"]
    assert demo.read("build/report.txt") == "HELLO##|5\n"


def test_step_that_raises_is_reported_then_the_fix_rebuilds(demo: Project, watch) -> None:
    w = watch()
    demo.write("helpers.py", HELPERS.replace("return len(text) * 1", 'raise ValueError("boom")'))
    lines = w.rebuild()
    text = "\n".join(lines)
    assert "Step count failed" in text and "ValueError: boom" in text, text
    w.until(r"^a step failed")
    demo.write("helpers.py", HELPERS.replace("* 1", "* 3"))
    lines = w.rebuild()
    assert executed(lines) == ["count", "report"]
    assert demo.read("build/report.txt") == "HELLO!|15\n"


def test_missing_input_and_bad_config_are_survived(demo: Project, watch) -> None:
    w = watch()
    os.unlink(demo.root / "b.txt")
    lines = w.rebuild()
    assert "b.txt" in "\n".join(lines) and "failed" in "\n".join(lines)
    demo.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n[watch]\ndebounce_ms = "soon"\n')
    lines = w.until(r"^waiting for the next save\.$")
    assert any("debounce_ms" in x for x in lines), lines
    demo.write("zenbuild.toml", 'pipelines = ["pipe:demo"]\n')
    demo.write("b.txt", "four\n")
    lines = w.rebuild()
    assert "load_b" in executed(lines) + cached(lines)
    assert demo.read("build/report.txt") == "HELLO!|5\n"


def test_an_input_folder_removed_and_recreated_is_watched_again(demo: Project) -> None:
    import shutil

    demo.write("pipe.py", PIPE.replace('File("b.txt")', 'File("data/b.txt")'))
    demo.write("data/b.txt", "four\n")
    w = Watch(demo)
    try:
        w.until(SUMMARY.pattern)
        w.ready()
        shutil.rmtree(demo.root / "data")
        lines = w.rebuild()
        assert "Step load_b failed" in "\n".join(lines) or "data/b.txt" in "\n".join(lines)
        demo.write("data/b.txt", "eleven!!!\n")  # a new folder, a new inode: a new watch
        lines = w.rebuild()
        assert executed(lines) == ["load_b", "count", "report"]
        demo.write("data/b.txt", "twelve!!!!\n")
        lines = w.rebuild()
        assert lines[0] == "changed: data/b.txt"
        assert demo.read("build/report.txt") == "HELLO!|11\n"
        # Swapped in one go (as a checkout may do): the old watch follows the moved-away folder.
        demo.write("data.new/b.txt", "thirteen!!!!\n")
        os.rename(demo.root / "data", demo.root / "data.old")
        os.rename(demo.root / "data.new", demo.root / "data")
        lines = w.rebuild()
        assert executed(lines) == ["load_b", "count", "report"], lines
        demo.write("data/b.txt", "fourteen!!!!!\n")
        lines = w.rebuild()
        assert lines[0] == "changed: data/b.txt"
        assert demo.read("build/report.txt") == "HELLO!|14\n"
    finally:
        assert w.stop() == 0, "\n".join(w.log)


def test_an_input_behind_a_symlink_out_of_the_project(demo: Project, tmp_path: Path) -> None:
    outside = tmp_path / "datasets"
    outside.mkdir()
    (outside / "b.txt").write_text("four\n")
    os.unlink(demo.root / "b.txt")
    os.symlink(outside / "b.txt", demo.root / "b.txt")
    w = Watch(demo)
    try:
        w.until(SUMMARY.pattern)
        w.ready()
        (outside / "b.txt").write_text("nineteen chars!!!!\n")
        lines = w.rebuild()
        assert lines[0] == "changed: b.txt"
        assert executed(lines) == ["load_b", "count", "report"]
    finally:
        assert w.stop() == 0, "\n".join(w.log)


def test_outputs_and_unrelated_files_do_not_trigger(demo: Project, watch) -> None:
    # build/report.txt is both a step's Output and another step's File input: the run writing
    # it must not trigger the next run, or the watcher would rebuild twice per save.
    demo.write("pipe.py", PIPE + """

@step
def publish(src: File, out: Output) -> None:
    tick("publish")
    out.write_text(src.read_text())


@pipeline
def demo2():
    demo()
    publish(File("build/report.txt"), Output("build/copy.txt"))
""".replace("    demo()", "    loud = shout(load_a(File('a.txt')))\n"
            "    report(loud, count(load_b(File('b.txt'))), Output('build/report.txt'))"))
    demo.write("zenbuild.toml", 'pipelines = ["pipe:demo2"]\n')
    w = Watch(demo)
    try:
        w.until(SUMMARY.pattern)
        w.ready()
        demo.write("notes.txt", "not an input\n")
        demo.write(".a.txt.swp", "vim swap\n")
        demo.write("build/copy.txt", "hand edit of an output\n")
        demo.write("a.txt", "next\n")  # the only change that counts
        lines = w.rebuild()
        assert lines[0] == "changed: a.txt"
        assert executed(lines) == ["load_a", "shout", "report", "publish"]
        assert demo.read("build/copy.txt") == "NEXT!|5\n"  # the hand edit is repaired
        demo.write("b.txt", "sentinel\n")
        headers = [x for x in w.until(r"^changed: b\.txt$") if x.startswith("changed:")]
        assert headers == ["changed: b.txt"], w.log
    finally:
        assert w.stop() == 0, "\n".join(w.log)


SLOW_HELPERS = HELPERS.replace("def count(text):\n", """def count(text):
    import os, time
    release = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")
    while text.startswith("slow") and not os.access(release, os.F_OK):
        time.sleep(0.01)
""")


def test_change_during_a_rebuild_is_queued_for_one_more(demo: Project, watch) -> None:
    demo.write("helpers.py", SLOW_HELPERS)
    w = watch()
    demo.write("b.txt", "slowly\n")
    first = w.until(r"^Step count has started\.$")
    demo.write("a.txt", "queued\n")  # arrives while count is busy
    demo.write("release", "")
    first += w.until(SUMMARY.pattern)
    assert executed(first) == ["load_b", "count", "report"]
    second = w.rebuild()
    assert second[0] == "changed: a.txt"
    assert executed(second) == ["load_a", "shout", "report"]
    assert demo.read("build/report.txt") == "QUEUED!|7\n"


def test_burst_of_saves_is_coalesced_into_one_rebuild(demo: Project, watch) -> None:
    # Deterministic on a loaded machine: the burst lands while a rebuild is held by a
    # handshake, and the watcher is seen to have read every event of it (a later save in the
    # same folder, reported by -v, comes after them on the same inotify queue) before the
    # rebuild is released. The debounce timing itself is tested with a fake clock in
    # tests/unit/test_watch.py.
    demo.write("helpers.py", SLOW_HELPERS)
    w = watch("-v")
    demo.write("b.txt", "slowly\n")
    first = w.until(r"^Step count has started\.$")  # held until the release file exists
    for i in range(20):  # 20 saves as fast as the file system takes them
        (demo.root / "a.txt").write_text(f"save {i}\n")
    demo.write("notes.txt", "after the burst\n")
    first += w.until(r"watch: ignored \S+ notes\.txt")
    demo.write("release", "")
    first += w.until(SUMMARY.pattern)
    assert executed(first) == ["load_b", "count", "report"]
    second = w.rebuild()
    assert second[0] == "changed: a.txt"
    assert executed(second) == ["load_a", "shout", "report"]
    assert demo.read("build/report.txt") == "SAVE 19!|7\n"
    demo.write("b.txt", "sentinel\n")  # nothing else was queued: its rebuild is the next one
    headers = [x for x in w.until(r"^changed: ") if x.startswith("changed:")]
    assert headers == ["changed: b.txt"], w.log
    w.until(SUMMARY.pattern)
    assert sorted(demo.ticks()) == ["count", "count", "load_a", "load_b", "load_b", "report",
                                    "report", "report", "shout"]


def test_on_busy_restart_stops_the_rebuild_and_starts_over(demo: Project, watch) -> None:
    demo.write("helpers.py", SLOW_HELPERS)
    w = watch("--on-busy", "restart")
    demo.write("b.txt", "slow\n")
    w.until(r"^Step count has started\.$")  # and it would wait forever: no release file
    demo.write("b.txt", "faster\n")
    w.until(r"^changed: b\.txt \(during the rebuild: stopping it to start over\)$")
    lines = w.rebuild()
    assert lines[0] == "changed: b.txt"
    assert executed(lines) == ["load_b", "count", "report"]
    assert demo.read("build/report.txt") == "HELLO!|7\n"


def test_poll_option_uses_the_polling_observer(demo: Project, watch) -> None:
    w = watch("--poll")
    assert "(polling)" in w.log[-1]
    demo.write("a.txt", "polled\n")
    lines = w.rebuild()
    assert executed(lines) == ["load_a", "shout", "report"]


def _descendants(pid: int) -> List[int]:
    kids: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc for child pids")
@pytest.mark.parametrize("to,runner", [("group", "fork"), ("watcher", "fork"),
                                       ("group", "spawn"), ("watcher", "spawn")])
def test_sigint_exits_0_with_no_child_left(demo: Project, to: str, runner: str) -> None:
    demo.write("pipe.py", PIPE.replace('tick("count")', 'tick("count")\n    import time\n'
                                       '    time.sleep(600)'))
    w = Watch(demo, env={"ZENBUILD_WATCH_EXEC": runner})
    try:
        w.until(r"^Step count has started\.$")
        kids = _descendants(w.proc.pid)
        assert kids, "the rebuild should run in a child process"
        if to == "group":  # Ctrl-C in a terminal: the whole foreground process group
            os.killpg(w.proc.pid, signal.SIGINT)
        else:
            os.kill(w.proc.pid, signal.SIGINT)
        assert w.proc.wait(WAIT) == 0, "\n".join(w.log)
    finally:
        if w.proc.poll() is None:
            os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait()
        w.reader.join(WAIT)
    deadline = time.monotonic() + 5
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded: reaping by init may lag a moment
    assert not [k for k in kids if _alive(k)], "a child process outlived zenbuild watch"
    # No stale lock: a run that refuses to wait gets the store at once.
    demo.write("pipe.py", PIPE)
    res = zb("run", "--no-wait", "--project-dir", str(demo.root))
    assert "count" in res.executed


def test_a_module_outside_the_root_on_the_path_is_watched_and_never_kept_warm(
        project: Project, tmp_path: Path) -> None:
    """Project code in a shared folder on PYTHONPATH, outside the root, is fingerprinted as
    source (an edit reruns its steps under `zenbuild run`). watch did not watch it, and its
    warm process pre-imported it after the first rebuild, so a later rebuild served or ran
    the old code. Its edit now starts a rebuild that runs the new code."""
    common = tmp_path / "common"
    common.mkdir()
    (common / "shared.py").write_text("K = 1\n")
    project.write("zenbuild.toml", 'pipelines = ["pipe:p"]\n')
    project.write("pipe.py", '''
        import shared
        from zenbuild import Output, pipeline, step

        @step
        def s(out: Output) -> None:
            out.write_text(f"K={shared.K}\\n")

        @pipeline
        def p():
            s(Output("build/k.txt"))
        ''')
    w = Watch(project, env={"PYTHONPATH": f"{REPO}{os.pathsep}{common}"})
    try:
        assert executed(w.until(SUMMARY.pattern)) == ["s"]
        w.ready()
        project.write("pipe.py", project.read("pipe.py") + "# a touch\n")
        assert cached(w.rebuild()) == ["s"]  # the warm process is made again after it
        (common / "shared.py").write_text("K = 2\n")
        lines = w.rebuild()
        assert lines[0].startswith("changed: ") and lines[0].endswith("common/shared.py"), lines
        assert executed(lines) == ["s"], lines
        assert project.read("build/k.txt") == "K=2\n"
    finally:
        assert w.stop() == 0, "\n".join(w.log)


@pytest.mark.parametrize("args,said", [
    (["--param", "greeting"], "--param 'greeting': expected KEY=VALUE"),
    (["nosuch"], "unknown pipeline 'nosuch'"),
])
def test_a_command_line_no_save_can_fix_stops_watch_with_exit_2(demo: Project, args: List[str],
                                                               said: str) -> None:
    """It printed the error and went on watching, for ever."""
    r = demo.run("watch", *args, check=2, timeout=60)
    assert said in r.stderr and "Traceback" not in r.output and "waiting" not in r.output, r
