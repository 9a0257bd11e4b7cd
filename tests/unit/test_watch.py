"""Unit tests of the watcher's parts: path rules, settings, polling fallback, fresh imports.

Which events matter and which folders are watched, settings precedence, the inotify-limit
fallback, the overflow rescan, the warm server's replacement, and stale-.pyc-proof imports."""

from __future__ import annotations

import errno
import importlib
import io
import logging
import os
import py_compile
import sys
from pathlib import Path
from typing import Any, List

import pytest

from zenbuild.errors import ConfigError
from zenbuild.project import SourceLoader, install_source_imports, project_predicate
from zenbuild.watch.child import ChildExit, Outcome, collect_modules
from zenbuild.watch.fs import OverflowHandler
from zenbuild.watch.paths import IgnoreRules, Report, WatchSet, is_editor_file
from zenbuild.watch.runner import Runner
from zenbuild.watch.watcher import Settings, Watcher, WatchOptions, resolve_settings


def test_ignore_rules_follow_gitignore_basics() -> None:
    r = IgnoreRules(["# comment", "*.log", "!keep.log", "build/", "/top.txt", "docs/**/*.md"])
    assert r.match("a.log") and r.match("deep/er/a.log")
    assert not r.match("keep.log")
    assert r.match("build/x.txt") and r.match("sub/build/x.txt")
    assert not r.match("build", is_dir=False) and r.match("build", is_dir=True)
    assert r.match("top.txt") and not r.match("sub/top.txt")
    assert r.match("docs/a/b/c.md") and r.match("docs/c.md") and not r.match("docs/c.txt")
    assert not r.match("src/main.py")


@pytest.mark.parametrize("name", [".a.py.swp", "a.py~", ".#a.py", "#a.py#", "4913",
                                  "a.py___jb_tmp___", "x.zenbuild-tmp"])
def test_editor_files(name: str) -> None:
    assert is_editor_file(name)


@pytest.mark.parametrize("name", ["a.py", "data.csv", "swap.txt", "Makefile"])
def test_not_editor_files(name: str) -> None:
    assert not is_editor_file(name)


@pytest.fixture
def ws(tmp_path: Path) -> WatchSet:
    root = tmp_path.resolve()
    (root / ".gitignore").write_text("data/\n*.cache\n")
    for d in ("pkg", "data", "raw/sub", "build", ".git", ".zenbuild"):
        (root / d).mkdir(parents=True)
    w = WatchSet(str(root), user_ignore=["scratch/*"])
    w.update(Report(
        root=str(root), store=str(root / ".zenbuild"), loaded=True,
        modules=[str(root / "pipe.py"), str(root / "pkg" / "helpers.py")],
        files=["data/in.csv", "build/a.txt", "scratch/x.txt"], dirs=[("raw", "**/*.csv")],
        outputs=["build/a.txt", "build/b.txt"], config_source=str(root / "zenbuild.toml"),
    ))
    return w


def _why(ws: WatchSet, rel: str, is_dir: bool = False) -> str:
    v = ws.classify(os.path.join(ws.root, rel), is_dir)
    return ("run: " if v.relevant else "skip: ") + v.why


def test_classify_precedence(ws: WatchSet) -> None:
    assert _why(ws, "pipe.py") == "run: module"
    assert _why(ws, "pkg/helpers.py") == "run: module"
    assert _why(ws, "data/in.csv") == "run: input"  # declared, though .gitignore'd
    assert _why(ws, "zenbuild.toml") == "run: config"
    assert _why(ws, "pyproject.toml") == "run: config"
    assert _why(ws, "raw/sub/x.csv") == "run: in a Dir input"
    assert _why(ws, "raw/sub/x.txt") == "skip: nothing depends on it"  # outside the Dir's glob
    assert _why(ws, "build/a.txt") == "skip: a step's Output"  # an Output beats an input
    assert _why(ws, "build/b.txt") == "skip: a step's Output"
    assert _why(ws, "scratch/x.txt") == "skip: ignored by [watch] ignore"
    assert _why(ws, ".zenbuild/cas/ab/cd") == "skip: the store"
    assert _why(ws, ".git/index") == "skip: a VCS, cache or virtualenv folder"
    assert _why(ws, "pkg/__pycache__/helpers.cpython-311.pyc").startswith("skip: a VCS")
    assert _why(ws, "pkg/.helpers.py.swp") == "skip: an editor swap or temp file"
    assert _why(ws, "data/other.csv") == "skip: ignored by .gitignore"
    assert _why(ws, "other.py") == "skip: nothing depends on it"
    assert not ws.classify("/somewhere/else.py").relevant


def test_a_report_that_did_not_load_adds_and_watches_every_py(ws: WatchSet) -> None:
    ws.update(Report(root=ws.root, loaded=False, modules=[os.path.join(ws.root, "new.py")]))
    assert _why(ws, "pipe.py") == "run: module"  # kept while the pipeline is broken
    assert _why(ws, "new.py") == "run: module"
    assert _why(ws, "other.py") == "run: a .py file (the pipeline does not load yet)"
    assert _why(ws, "data/x.py") == "skip: ignored by .gitignore"
    ws.update(Report(root=ws.root, loaded=True, modules=[os.path.join(ws.root, "pipe.py")]))
    assert _why(ws, "other.py") == "skip: nothing depends on it"
    assert _why(ws, "pkg/helpers.py") == "skip: nothing depends on it"  # no longer imported


def test_folders_are_parents_dirs_recursive_and_nearest_existing(ws: WatchSet) -> None:
    root = ws.root
    got = ws.folders()
    assert (root, False) in got
    assert (os.path.join(root, "pkg"), False) in got
    assert (os.path.join(root, "data"), False) in got
    assert (os.path.join(root, "raw"), True) in got
    assert (os.path.join(root, "raw", "sub"), False) not in got  # covered recursively
    ws.update(Report(root=root, loaded=True, files=["missing/deeper/in.txt"],
                     dirs=[("raw", None), ("raw/sub", None), ("gone", None)]))
    got = ws.folders()
    assert (root, False) in got  # the nearest folder that exists, for both missing paths
    assert (os.path.join(root, "raw"), True) in got  # not dropped for the missing Dir
    assert (os.path.join(root, "raw", "sub"), True) not in got  # inside raw: covered
    assert os.path.join(root, "missing", "deeper", "in.txt") in ws.wanted()


def test_settings_precedence() -> None:
    s = resolve_settings(WatchOptions(), None)
    assert s == Settings(0.05, False, "queue", [])
    table = {"debounce_ms": 200, "poll": True, "on_busy": "restart", "ignore": ["*.tmp"]}
    s = resolve_settings(WatchOptions(), table)
    assert (s.debounce_s, s.poll, s.on_busy, s.ignore) == (0.2, True, "restart", ["*.tmp"])
    s = resolve_settings(WatchOptions(debounce_ms=0, poll=False, on_busy="queue"), table)
    assert (s.debounce_s, s.poll, s.on_busy) == (0.0, False, "queue")
    with pytest.raises(ConfigError):
        resolve_settings(WatchOptions(), {"debounce_ms": -1})


class FakeObserver:
    def __init__(self, poll: bool, fail: bool) -> None:
        self.poll, self.fail = poll, fail
        self.scheduled: List[Any] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass

    def schedule(self, handler: Any, path: str, recursive: bool = False, **kw: Any) -> Any:
        if self.fail:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        self.scheduled.append((path, recursive))
        return (path, recursive)

    def unschedule(self, watch: Any) -> None:
        self.scheduled.remove(watch)


def test_inotify_watch_limit_falls_back_to_polling_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "zenbuild.toml").write_text('pipelines = ["p:p"]\n')
    made: List[FakeObserver] = []

    def factory(poll: bool) -> FakeObserver:
        made.append(FakeObserver(poll, fail=not poll))
        return made[-1]

    out, err = io.StringIO(), io.StringIO()
    w = Watcher(WatchOptions(project_dir=str(tmp_path)), out=out, err=err, observer_factory=factory)
    try:
        w.refresh_watches()
    finally:
        w._shutdown()
    assert [o.poll for o in made] == [False, True]
    assert made[1].scheduled == [(str(tmp_path.resolve()), False)]
    assert w.polling
    text = err.getvalue()
    assert "inotify watch limit" in text and "falling back to polling" in text
    assert "fs.inotify.max_user_watches" in text


def test_watchdog_overflow_log_becomes_a_rescan() -> None:
    got: List[tuple] = []
    h = OverflowHandler(got.append)
    rec = logging.LogRecord("watchdog", logging.WARNING, __file__, 1,
                            "Inotify queue overflowed; filesystem events were lost", None, None)
    h.emit(rec)
    assert got == [("overflow",)]


@pytest.mark.parametrize("toml", ["[watch]\ndebounce_ms = 'x'\n", "[watch]\ndebounce_ms = -5\n",
                                  "not toml at all ["])
def test_bad_config_does_not_stop_the_watcher_from_starting(tmp_path: Path, toml: str) -> None:
    (tmp_path / "zenbuild.toml").write_text(toml)
    w = Watcher(WatchOptions(project_dir=str(tmp_path)), out=io.StringIO(), err=io.StringIO(),
                observer_factory=lambda poll: FakeObserver(poll, False))
    try:
        assert w.settings.debounce_s == 0.05
    finally:
        w._shutdown()


def test_fresh_imports_ignore_a_stale_pyc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "zb_fresh_mod.py"
    mod.write_text("VALUE = 1\n")
    py_compile.compile(str(mod), doraise=True)
    st = os.stat(mod)
    mod.write_text("VALUE = 2\n")  # same size; then the same mtime as the .pyc recorded
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    importlib.invalidate_caches()
    try:
        stale = importlib.import_module("zb_fresh_mod")
        assert stale.VALUE == 1  # what a plain import runs: the reason for SourceLoader
        del sys.modules["zb_fresh_mod"]
        install_source_imports(project_predicate(str(tmp_path), str(tmp_path / ".zenbuild")))
        fresh = importlib.import_module("zb_fresh_mod")
        assert fresh.VALUE == 2
    finally:
        sys.modules.pop("zb_fresh_mod", None)


def test_collect_modules_splits_project_files_from_preloadable_ones(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zb_proj_mod.py").write_text("import colorsys\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    baseline = set(sys.modules) - {"colorsys"}
    sys.modules.pop("colorsys", None)
    try:
        importlib.import_module("zb_proj_mod")
        found = collect_modules(project_predicate(str(tmp_path), ""), baseline)
    finally:
        sys.modules.pop("zb_proj_mod", None)
    assert found["modules"] == [str(tmp_path / "zb_proj_mod.py")]
    assert "colorsys" in found["preload"] and "zb_proj_mod" not in found["preload"]


def test_warm_server_is_replaced_when_a_package_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from zenbuild.watch import runner as watch_exec

    made: List[Any] = []

    class FakeServer:
        def __init__(self, root: str, preload: List[str], on_message: Any) -> None:
            self.preload, self.sent, self.closed = preload, [], False
            made.append(self)

        def alive(self) -> bool:
            return not self.closed

        def send(self, msg: Any) -> bool:
            self.sent.append(msg)
            return True

        def close(self, timeout: float) -> None:
            self.closed = True

    stamp = {"/site-packages": 1}
    monkeypatch.setattr(watch_exec, "_Server", FakeServer)
    monkeypatch.setattr(watch_exec, "_path_stamp", lambda: dict(stamp))
    r = watch_exec.ForkRunner(lambda item: None, "/proj")
    r.start(1, {})
    r.preload(["json", "csv"])  # learnt from a rebuild: a new server pre-imports them
    r.start(2, {})
    assert len(made) == 2 and made[0].closed and made[1].preload == ["json", "csv"]
    stamp["/site-packages"] = 2  # `pip install` touched site-packages
    r.start(3, {})
    assert len(made) == 3 and made[1].closed and made[2].preload == ["json", "csv"]
    assert [m["id"] for m in made[2].sent] == [3]
    r.preload(["json"])  # nothing new: keep the server
    assert len(made) == 3
    r.close()
    assert made[2].closed


def test_compiled_code_is_cached_by_content_not_by_mtime(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cache = tmp_path / "code"
    cache.mkdir()
    mod = src / "zb_cached_mod.py"
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    install_source_imports(project_predicate(str(src), ""), str(cache))

    def load() -> Any:
        sys.modules.pop("zb_cached_mod", None)
        importlib.invalidate_caches()
        try:
            return importlib.import_module("zb_cached_mod").VALUE
        finally:
            sys.modules.pop("zb_cached_mod", None)

    compiled: List[str] = []
    real_compile = SourceLoader.source_to_code

    def counting(self: Any, data: Any, path: Any, *a: Any, **k: Any) -> Any:
        compiled.append(path)
        return real_compile(self, data, path, *a, **k)

    monkeypatch.setattr(SourceLoader, "source_to_code", counting)
    mod.write_text("VALUE = 1\n")
    st = os.stat(mod)
    assert load() == 1 and len(os.listdir(cache)) == 1 and len(compiled) == 1
    assert load() == 1 and len(compiled) == 1  # the same source: served from the cache
    mod.write_text("VALUE = 2\n")
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: new content
    assert load() == 2 and len(compiled) == 2
    assert len(os.listdir(cache)) == 1  # one entry per module file: the cache cannot grow


def test_damaged_compiled_code_is_compiled_again_never_run(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A bit flipped in a cached code body that still unmarshals (bit rot in the store) would
    run code that is not the source, and store its result under the source's key."""
    src = tmp_path / "src"
    src.mkdir()
    cache = tmp_path / "code"
    mod = src / "zb_rot_mod.py"
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", sys.dont_write_bytecode)
    install_source_imports(project_predicate(str(src), ""), str(cache))

    def load() -> Any:
        sys.modules.pop("zb_rot_mod", None)
        importlib.invalidate_caches()
        try:
            return importlib.import_module("zb_rot_mod").VALUE
        finally:
            sys.modules.pop("zb_rot_mod", None)

    mod.write_text('VALUE = "FROM-SOURCE"\n')
    assert load() == "FROM-SOURCE"
    (entry,) = cache.iterdir()
    data = entry.read_bytes()
    i = data.index(b"FROM-SOURCE") + len("FROM-")
    entry.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])  # "FROM-ROURCE"
    assert load() == "FROM-SOURCE"
    assert b"FROM-SOURCE" in entry.read_bytes()  # and the damaged entry is replaced


def test_inputs_behind_a_symlink_out_of_the_project_are_watched(tmp_path: Path) -> None:
    root, outside = tmp_path / "proj", tmp_path / "datasets"
    (outside / "images").mkdir(parents=True)
    root.mkdir()
    os.symlink(outside, root / "data")
    ws = WatchSet(str(root))
    ws.update(Report(root=str(root), loaded=True, files=["data/in.csv"],
                     dirs=[("data/images", None)]))
    real = str(outside.resolve())
    v = ws.classify(os.path.join(real, "in.csv"))
    assert v.relevant and ws.rel(os.path.join(real, "in.csv")) == "data/in.csv"
    assert ws.classify(os.path.join(real, "images", "cat.png")).relevant
    assert ws.rel(os.path.join(real, "images", "cat.png")) == "data/images/cat.png"
    assert not ws.classify(os.path.join(real, "other.csv")).relevant
    assert not ws.classify(str(tmp_path / "elsewhere.txt")).relevant
    assert (real, False) in ws.folders() and (os.path.join(real, "images"), True) in ws.folders()


def test_path_stamp_watches_site_packages_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zenbuild.watch.runner import _path_stamp

    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.setattr(sys, "path", ["", str(proj), str(site)])
    before = _path_stamp()
    assert list(before) == [str(site)]
    (proj / "saved.py.tmp").write_text("")  # an atomic save in the project: no restart
    assert _path_stamp() == before
    (site / "newpkg").mkdir()
    os.utime(site, ns=(1, before[str(site)] + 10**9))  # what `pip install` does to the folder
    assert _path_stamp() != before


class FakeRunner(Runner):
    """Records the rebuilds the watcher starts; never starts a process."""

    def __init__(self) -> None:
        super().__init__(lambda item: None)
        self.started: List[List[str]] = []

    def start(self, run_id: int, req: Any) -> None:
        self.started.append([run_id])

    def interrupt(self, sig: int = 2) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass


def _clocked_watcher(tmp_path: Path, debounce_ms: int) -> Any:
    (tmp_path / "zenbuild.toml").write_text('pipelines = ["p:p"]\n')
    (tmp_path / "a.txt").write_text("a\n")
    now = [1000.0]
    out = io.StringIO()
    runner = FakeRunner()
    w = Watcher(WatchOptions(project_dir=str(tmp_path), debounce_ms=debounce_ms), out=out,
                err=io.StringIO(), observer_factory=lambda poll: FakeObserver(poll, False),
                clock=lambda: now[0], runner=runner)
    w.ws.update(Report(root=str(tmp_path.resolve()), loaded=True, files=["a.txt"]))
    return w, runner, now, out, str(tmp_path.resolve() / "a.txt")


def test_a_burst_of_saves_starts_one_rebuild_once_quiet(tmp_path: Path) -> None:
    w, runner, now, out, a = _clocked_watcher(tmp_path, 50)
    try:
        for _ in range(20):  # 20 saves 10 ms apart: always inside the 50 ms quiet period
            w.dispatch(("fs", "modified", a, "", False))
            now[0] += 0.010
            assert w.tick() is not None and runner.started == []
        now[0] += 0.039  # 49 ms after the last save
        assert w.tick() == pytest.approx(0.001) and runner.started == []
        now[0] += 0.002
        assert w.tick() == 0 and runner.started == [[1]]
        assert out.getvalue().splitlines() == ["changed: a.txt"]
        assert w.tick() is None  # nothing pending while it runs
    finally:
        w._shutdown()


def test_a_steady_stream_still_rebuilds_every_max_delay(tmp_path: Path) -> None:
    from zenbuild.watch.watcher import MAX_DELAY_S

    w, runner, now, _out, a = _clocked_watcher(tmp_path, 400)
    try:
        start = now[0]
        while now[0] - start < MAX_DELAY_S - 0.05:  # a save every 100 ms: never quiet for 400
            w.dispatch(("fs", "modified", a, "", False))
            w.tick()
            now[0] += 0.1
        assert runner.started == []
        now[0] = start + MAX_DELAY_S
        assert w.tick() == 0 and runner.started == [[1]]
    finally:
        w._shutdown()


def test_saves_during_a_rebuild_make_exactly_one_more(tmp_path: Path) -> None:
    w, runner, now, out, a = _clocked_watcher(tmp_path, 50)
    try:
        w.dispatch(("fs", "modified", a, "", False))
        now[0] += 0.1
        assert w.tick() == 0 and runner.started == [[1]]
        for _ in range(20):  # while rebuild 1 runs: queued, not started
            w.dispatch(("fs", "modified", a, "", False))
            now[0] += 0.001
            assert w.tick() is None
        now[0] += 5.0
        w.dispatch(("exit", ChildExit(1, Outcome.SUCCEEDED)))
        assert w.tick() == 0 and runner.started == [[1], [2]]
        now[0] += 5.0
        assert w.tick() is None and runner.started == [[1], [2]]
    finally:
        w._shutdown()


@pytest.mark.parametrize("code,outcome,signal_,lost", [
    (0, Outcome.SUCCEEDED, 0, ""), (2, Outcome.USER_ERROR, 0, ""), (130, Outcome.INTERRUPTED, 0, ""),
    (-9, None, 9, ""), (77, Outcome.CRASHED, 0, "")])
def test_child_exit_from_a_process_exit_code(code: int, outcome: Any, signal_: int, lost: str) -> None:
    assert ChildExit.from_code(4, code) == ChildExit(4, outcome, signal_, lost)


def test_an_event_counts_when_it_changes_what_a_step_listed(tmp_path: Path) -> None:
    """A listing of every name counts any entry appearing, going or renamed in its folder (not
    an edit of one, nor anything below); a pattern counts only what changes its matches, at
    any depth it can see. Judged against the digests the steps' entries recorded."""
    from zenbuild.discovered import listing_digest
    from zenbuild.trace.globs import digest

    root = tmp_path.resolve()
    for rel in ("raw/a.txt", "raw/sub/b.txt", "data/a.csv", "tree/x/a.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("1")
    star = ["glob", "data", "*.csv", {}]
    deep = ["path.glob", "tree", "**/*.csv", {}]
    ws = WatchSet(str(root), gitignore=False)
    ws.update(Report(root=str(root), loaded=True, listings=[
        ["list", "raw", "", {}, listing_digest(str(root), "raw")],
        [*star, digest(str(root), star)], [*deep, digest(str(root), deep)]]))
    assert (str(root / "raw"), False) in ws.folders()
    assert (str(root / "data"), False) in ws.folders() and (str(root / "tree"), True) in ws.folders()

    def counts(rel: str, text: str = "1") -> bool:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        return ws.classify(str(root / rel)).relevant

    assert not counts("raw/a.txt", "edited")  # no name changed
    assert not counts("raw/sub/c.txt")  # below: not in the listing of raw
    assert not counts("data/notes.txt") and not counts("data/.hidden.csv")
    assert not counts("tree/x/notes.txt")
    assert counts("tree/x/y/new.csv")
    assert counts("data/b.csv")
    assert counts("raw/new.txt")
    (root / "raw" / "new.txt").unlink()  # back as recorded: a late event for it no longer counts
    assert not ws.classify(str(root / "raw" / "new.txt")).relevant
