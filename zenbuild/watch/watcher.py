"""`zenbuild watch`: notice changes, debounce them, start one rebuild at a time in a fresh process.

The cache decides what reruns; the watcher only decides when. It never imports the project:
each rebuild runs in a child (watch/runner.py) that reports what the pipeline depends on
(watch/child.py), which becomes the set of paths that matter (watch/paths.py); watchdog sits
behind watch/fs.py."""

from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from zenbuild.config import load_config
from zenbuild.errors import ConfigError, ZenbuildError
from zenbuild.project import locate
from zenbuild.watch.child import ChildExit, Outcome
from zenbuild.watch.fs import (
    LIMIT_HELP,
    EventForwarder,
    NullObserver,
    OverflowHandler,
    event_filter,
    inotify_limit,
    make_observer,
)
from zenbuild.watch.paths import IgnoreRules, Report, WatchSet
from zenbuild.watch.runner import ForkRunner, Runner, SpawnRunner, default_mode

DEFAULT_DEBOUNCE_MS = 50
MAX_DELAY_S = 2.0  # a steady stream of events still starts a rebuild this often
KILL_AFTER_S = 10.0  # --on-busy restart: SIGKILL a rebuild that ignores SIGINT this long
_RUN_EVENTS = ("modified", "created", "moved", "deleted", "closed")


@dataclass
class WatchOptions:
    """What the CLI passes in; None means: take it from zenbuild.toml [watch], else the default."""

    project_dir: Optional[str] = None
    pipeline: Optional[str] = None
    params: Sequence[str] = ()
    debounce_ms: Optional[int] = None
    poll: Optional[bool] = None
    on_busy: Optional[str] = None
    quiet: bool = False
    verbose: bool = False
    mode: Optional[str] = None  # "fork" or "spawn"; default: ZENBUILD_WATCH_EXEC, else fork


@dataclass
class Settings:
    debounce_s: float = DEFAULT_DEBOUNCE_MS / 1000
    poll: bool = False
    on_busy: str = "queue"
    ignore: List[str] = field(default_factory=list)


def resolve_settings(opts: WatchOptions, table: Optional[Dict[str, Any]]) -> Settings:
    """Precedence: command-line option > zenbuild.toml [watch] > default."""
    t = table or {}
    ms = opts.debounce_ms if opts.debounce_ms is not None else t.get("debounce_ms", DEFAULT_DEBOUNCE_MS)
    if ms < 0:
        raise ConfigError(f"[watch] debounce_ms must be >= 0 (milliseconds), got {ms}")
    return Settings(
        debounce_s=ms / 1000,
        poll=opts.poll if opts.poll is not None else bool(t.get("poll", False)),
        on_busy=opts.on_busy or t.get("on_busy", "queue"),
        ignore=[str(p) for p in t.get("ignore", [])],
    )


def _describe(paths: List[str], limit: int = 4) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


class Watcher:
    """The long-lived process. It never imports the project: every rebuild runs in a child."""

    def __init__(
        self,
        opts: WatchOptions,
        out: Optional[IO[str]] = None,
        err: Optional[IO[str]] = None,
        observer_factory: Optional[Callable[[bool], Any]] = None,
        clock: Callable[[], float] = time.monotonic,
        runner: Optional[Runner] = None,
    ) -> None:
        self.clock = clock  # debounce and kill deadlines; a test passes a fake one
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.root, source = locate(opts.project_dir)
        table: Optional[Dict[str, Any]] = None
        store = ""
        try:
            config = load_config(self.root, source)
            table, store = dict(config.watch), config.store
        except ZenbuildError:
            pass  # the first rebuild reports it; watch with the defaults until it is fixed
        try:
            self.settings = resolve_settings(opts, table)
        except ZenbuildError as e:
            self.warn(f"{e}; using the default")
            self.settings = resolve_settings(opts, None)
        self.ws = WatchSet(self.root, self.settings.ignore)
        if store:
            self.ws.store = os.path.realpath(store)
        self.q: queue.Queue[tuple] = queue.Queue()
        self.observer_factory = observer_factory or make_observer
        self.observer: Any = None
        self.polling = False
        self.watches: Dict[Tuple[str, bool], Any] = {}
        self.tmp = tempfile.mkdtemp(prefix="zenbuild-watch-")
        mode = opts.mode or default_mode()
        self.runner: Runner = runner or (
            ForkRunner(self.q.put, self.root) if mode == "fork" else SpawnRunner(self.q.put))
        self.run_id = 0
        self.running: Optional[int] = None
        self.run_started = 0.0
        self.stopping = False  # a restart is under way
        self.stop_at = 0.0
        self.pending: Dict[str, None] = {}
        self.first_pending = 0.0
        self.last_event = 0.0
        self.shown_counts: Optional[Tuple[int, int]] = None
        self.last_failed = False  # the last rebuild did not succeed
        self.told: Set[Tuple[str, str]] = set()

    # -- output -------------------------------------------------------------------------------
    def say(self, text: str, important: bool = False) -> None:
        if self.opts.quiet and not important:
            return
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(f"Warning: {text}\n")
        self.err.flush()

    def debug(self, text: str) -> None:
        if self.opts.verbose:
            self.say(f"  watch: {text}")

    # -- watches ------------------------------------------------------------------------------
    def _start_observer(self, poll: bool) -> None:
        self.observer = self.observer_factory(poll)
        self.polling = poll
        self.observer.start()

    def _fall_back_to_polling(self, e: OSError) -> None:
        what = "watch" if e.errno == errno.ENOSPC else "instance"
        limit = inotify_limit(what)
        self.warn(f"the inotify {what} limit is reached ({e.strerror or e}"
                  f"{f'; fs.inotify.max_user_{what}s = {limit}' if limit else ''}); "
                  f"falling back to polling, which is slower. To use inotify again, {LIMIT_HELP}.")
        try:
            self.observer.stop()
        except Exception:  # noqa: BLE001 - the broken observer may not even have started
            pass
        self.watches.clear()
        self._start_observer(True)

    def refresh_watches(self) -> List[str]:
        """Schedule the folders the WatchSet wants and drop the others. Returns new folders."""
        if self.observer is None:
            try:
                self._start_observer(self.settings.poll)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EMFILE) or self.polling:
                    raise
                self.observer = NullObserver()
                self._fall_back_to_polling(e)
        observer = self.observer
        assert observer is not None  # started above
        want = set(self.ws.folders())
        for key in list(self.watches):
            if key not in want:
                try:
                    observer.unschedule(self.watches.pop(key))
                except (KeyError, OSError, ValueError):
                    pass
        added: List[str] = []
        handler = EventForwarder(self.q.put)
        for key in sorted(want - set(self.watches)):
            folder, recursive = key
            if not os.path.isdir(folder):
                continue
            try:
                self.watches[key] = observer.schedule(handler, folder, recursive=recursive,
                                                      event_filter=event_filter())
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EMFILE) and not self.polling:
                    self._fall_back_to_polling(e)
                    return self.refresh_watches()
                if e.errno != errno.ENOENT:
                    self.warn(f"cannot watch {folder}: {e.strerror or e}")
                continue
            added.append(folder)
        return added

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        overflow = OverflowHandler(self.q.put)
        wlog = logging.getLogger("watchdog")
        wlog.addHandler(overflow)
        try:  # SIGTERM arrives as KeyboardInterrupt too (cli.entry installs that)
            self.refresh_watches()
            if isinstance(self.runner, ForkRunner):
                self.runner.warm_up()
            self._start_rebuild([])
            self._loop()
        except KeyboardInterrupt:
            pass
        finally:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
            try:
                self._shutdown()
            finally:
                if old_int is not None:
                    signal.signal(signal.SIGINT, old_int)
                wlog.removeHandler(overflow)
        self.say("stopped watching.", important=True)
        return 0

    def _loop(self) -> None:
        while True:
            timeout = self.tick()
            if timeout == 0:
                continue
            try:
                item = self.q.get(timeout=timeout)
            except queue.Empty:
                continue
            self.dispatch(item)

    def tick(self) -> Optional[float]:
        """Act on the clock: kill a rebuild that ignored an interrupt, start a rebuild whose
        debounce is over. Returns how long to wait for the next event (None: no deadline;
        0: act again at once)."""
        timeout: Optional[float] = None
        if self.stopping and self.running is not None:
            left = self.stop_at + KILL_AFTER_S - self.clock()
            if left <= 0:
                self.warn(f"the rebuild did not stop within {KILL_AFTER_S:.0f}s of an "
                          "interrupt; killing it")
                self.runner.interrupt(signal.SIGKILL)
                self.stop_at = float("inf")
            else:
                timeout = left
        if self.pending and self.running is None:
            now = self.clock()
            due = min(self.last_event + self.settings.debounce_s, self.first_pending + MAX_DELAY_S)
            if now >= due:
                changed = list(self.pending)
                self.pending.clear()
                self._start_rebuild(changed)
                return 0
            timeout = due - now
        return timeout

    def dispatch(self, item: tuple) -> None:
        """One message from the queue: a file event, a rebuild's end, an overflow."""
        kind = item[0]
        if kind == "fs":
            self._on_fs(*item[1:])
        elif kind == "exit":
            self._on_exit(item[1])
        elif kind == "overflow":
            self.warn("the file-event queue overflowed and events were lost; rescanning "
                      "(a rebuild will check everything)")
            self._changed("(all files: events were lost)")

    def _changed(self, rel: str) -> None:
        now = self.clock()
        if not self.pending:
            self.first_pending = now
        self.pending[rel] = None
        self.last_event = now
        if (self.running is not None and self.settings.on_busy == "restart"
                and not self.stopping):
            self.stopping = True
            self.stop_at = self.clock()
            self.say(f"changed: {rel} (during the rebuild: stopping it to start over)")
            self.runner.interrupt()

    def _on_fs(self, etype: str, src: str, dest: str, is_dir: bool) -> None:
        if etype not in _RUN_EVENTS:
            return
        if is_dir:
            if etype in ("created", "moved", "deleted"):
                self._on_dir(etype, src, dest)
            return
        for p in (src, dest):
            if not p:
                continue
            v = self.ws.classify(p)
            rel = self.ws.rel(os.path.realpath(p))
            if v.relevant:
                self.debug(f"{etype} {rel} ({v.why})")
                self._changed(rel)
            elif self.opts.verbose and v.why not in ("the store", "outside the project"):
                if (rel, v.why) not in self.told:  # once per rebuild: `-v > log` in the project
                    self.told.add((rel, v.why))
                    self.debug(f"ignored {etype} {rel}: {v.why}")

    def _on_dir(self, etype: str, src: str, dest: str) -> None:
        """A folder appeared, moved or vanished: re-arm watches below it, and count any wanted
        path that now exists there as changed."""
        touched = [os.path.realpath(p) for p in (src, dest) if p]
        wanted = self.ws.wanted()
        hit = [w for w in wanted for t in touched if w == t or w.startswith(t + os.sep)]
        for t in touched:
            v = self.ws.classify(t, is_dir=True)
            if v.relevant:
                self._changed(self.ws.rel(t) + "/")
        if not hit:
            return
        for key in list(self.watches):  # a watch on a folder that was replaced is dead
            if any(key[0] == t or key[0].startswith(t + os.sep) for t in touched):
                try:
                    self.observer.unschedule(self.watches.pop(key))
                except (KeyError, OSError, ValueError):
                    pass
        self.refresh_watches()  # armed before looking, so nothing created meanwhile is missed
        for w in hit:
            if os.path.exists(w) or etype != "created":
                self._changed(self.ws.rel(w))

    # -- rebuilds -----------------------------------------------------------------------------
    def _start_rebuild(self, changed: List[str]) -> None:
        self.run_id += 1
        self.stopping = False
        self.told.clear()
        if changed:
            self.say(f"changed: {_describe(changed)}")
        report = os.path.join(self.tmp, f"report-{self.run_id}.json")
        req: Dict[str, Any] = {
            "root": self.root,
            "pipeline": self.opts.pipeline,
            "params": list(self.opts.params),
            "quiet": self.opts.quiet,
            "verbose": self.opts.verbose,
            "report": report,
        }
        try:
            os.unlink(report)
        except FileNotFoundError:
            pass
        self.running = self.run_id
        self.run_started = time.time()
        self.out.flush()
        self.err.flush()
        self.runner.start(self.run_id, req)

    def _on_exit(self, ended: ChildExit) -> None:
        run_id = ended.run_id
        if run_id != self.running:
            return
        self.running = None
        path = os.path.join(self.tmp, f"report-{run_id}.json")
        data = _read_json(path)
        report = Report(root=self.root)
        if data is not None:
            report = Report(
                root=self.root, store=data.get("store") or "", loaded=bool(data.get("loaded")),
                modules=list(data.get("modules", [])), files=list(data.get("files", [])),
                dirs=[(d, g) for d, g in data.get("dirs", [])],
                outputs=list(data.get("outputs", [])), config_source=data.get("config_source"),
                listings=[list(x) for x in data.get("listings", [])],
            )
            if data.get("watch") is not None:
                try:
                    self.settings = resolve_settings(self.opts, data["watch"])
                except ZenbuildError as e:
                    self.warn(str(e))
            self.runner.preload(list(data.get("preload", [])))
        self.ws.user_ignore = IgnoreRules(self.settings.ignore)
        self.ws.gitignore = IgnoreRules.from_file(os.path.join(self.ws.root, ".gitignore"))
        self.ws.update(report)
        new_folders = self.refresh_watches()
        self._missed_during_run(new_folders)
        counts = (data or {}).get("counts", {})
        outcome = ended.outcome
        restarted = outcome is Outcome.INTERRUPTED and self.stopping
        if outcome is Outcome.SUCCEEDED and run_id > 1 and not counts.get("executed"):
            self.say("nothing reran: " + ("every step is up to date again." if self.last_failed
                                          else "the change affects no step."), important=True)
        elif outcome is Outcome.STEP_FAILED:
            self.say("a step failed; fix it and save to rebuild.", important=True)
        elif restarted:
            pass
        elif ended.lost:
            self.warn(f"{ended.lost}; starting a new one for the next save.")
        elif ended.signal:
            self.say(f"the rebuild process was killed by signal {ended.signal}; waiting for the "
                     "next save.", important=True)
        elif outcome is not Outcome.SUCCEEDED:
            self.say("waiting for the next save.", important=True)
        self.last_failed = outcome is not Outcome.SUCCEEDED and not restarted
        n = self.ws.counts()
        if n != self.shown_counts or self.opts.verbose:
            self.shown_counts = n
            mode = " (polling)" if self.polling else ""
            self.say(f"watching {_plural(n[0], 'file')} in {_plural(n[1], 'folder')}{mode}; "
                     "press Ctrl-C to stop.")
            for folder, rec in self.ws.folders():
                self.debug(f"watching {self.ws.rel(folder) or '.'}{'/** ' if rec else ''}")

    def _missed_during_run(self, folders: List[str]) -> None:
        """Files in folders only watched from now on may have changed while the rebuild ran."""
        if not folders:
            return
        fresh = {os.path.realpath(f) for f in folders}
        since = self.run_started - 0.015  # file-system clocks tick coarsely (4-10 ms)
        for path in self.ws.wanted():
            if os.path.dirname(path) not in fresh:
                continue
            try:
                if os.stat(path).st_mtime >= since and self.ws.classify(path).relevant:
                    self._changed(self.ws.rel(path))
            except OSError:
                pass

    def _shutdown(self) -> None:
        try:
            self.runner.close(timeout=10.0)
        finally:
            if self.observer is not None:
                try:
                    self.observer.stop()
                    self.observer.join(5.0)
                except Exception:  # noqa: BLE001 - shutting down anyway
                    pass
            shutil.rmtree(self.tmp, ignore_errors=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def watch(opts: WatchOptions) -> int:
    """Run `zenbuild watch` until Ctrl-C; returns the exit code (0)."""
    return Watcher(opts).run()


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    import json

    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


__all__ = ["Settings", "WatchOptions", "Watcher", "resolve_settings", "watch"]
