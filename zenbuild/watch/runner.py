"""Where `zenbuild watch` runs each rebuild: a fork of a warm server, or a fresh interpreter.

The fork is the default on POSIX (measured 2-3x sooner to the first step, see
benchmarks/bench_watch.py); ZENBUILD_WATCH_EXEC=spawn selects a fresh interpreter. Both start,
interrupt and reap exactly one child at a time."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable, Dict, List, Optional, Set

from zenbuild.watch.child import ChildExit, Outcome

Post = Callable[[tuple], None]  # puts ("exit", ChildExit) on the watcher's queue
GRACE_S = 1.0  # on shutdown, how long a running child may take to stop before SIGINT

_WARM = (
    "zenbuild.watch.child", "zenbuild.project", "zenbuild.run", "zenbuild.scheduler", "zenbuild.rebuild",
    "zenbuild.store.db", "zenbuild.fingerprint.code", "zenbuild.events", "zenbuild.executors",
    "zenbuild.store.outputs", "zenbuild.serialize", "zenbuild.dsl", "zenbuild.config",
)


def default_mode() -> str:
    """``ZENBUILD_WATCH_EXEC=fork|spawn`` chooses; fork is the default where os.fork exists."""
    mode = os.environ.get("ZENBUILD_WATCH_EXEC", "").strip().lower()
    if mode in ("fork", "spawn"):
        return mode if (mode == "spawn" or hasattr(os, "fork")) else "spawn"
    return "fork" if hasattr(os, "fork") and sys.platform != "win32" else "spawn"


class Runner:
    """Interface: ``start`` one rebuild, ``interrupt`` it, ``close`` everything."""

    mode = "?"

    def __init__(self, post: Post) -> None:
        self.post = post

    def start(self, run_id: int, req: Dict[str, Any]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def interrupt(self, sig: int = signal.SIGINT) -> None:  # pragma: no cover - interface
        """Send ``sig`` to the running child, if any (SIGINT: stop cleanly; SIGKILL: now)."""
        raise NotImplementedError

    def preload(self, names: List[str]) -> None:
        """More modules a warm server may pre-import (ignored by a fresh-interpreter runner)."""

    def close(self, timeout: float = 10.0) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class SpawnRunner(Runner):
    """Each rebuild is ``python -m zenbuild.watch.child REQUEST`` in a new interpreter."""

    mode = "spawn"

    def __init__(self, post: Post) -> None:
        super().__init__(post)
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, run_id: int, req: Dict[str, Any]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zenbuild.watch.child", json.dumps(req)],
            stdin=subprocess.DEVNULL,
        )
        self.proc = proc

        def wait() -> None:
            self.post(("exit", ChildExit.from_code(run_id, proc.wait())))

        threading.Thread(target=wait, name="zenbuild-watch-wait", daemon=True).start()

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def close(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(GRACE_S)  # a Ctrl-C on the terminal reached it already
        except subprocess.TimeoutExpired:
            self.interrupt()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None


class ForkRunner(Runner):
    """Talks to a warm server (``serve`` below, in its own interpreter) that has imported
    zenbuild and the third-party and standard-library modules earlier rebuilds used, but never
    the project's own modules; it forks one child per rebuild, so each rebuild imports the
    project's code fresh and pays nothing for the rest. Same idea as multiprocessing's
    forkserver with set_forkserver_preload, with the preload list learnt from each rebuild."""

    mode = "fork"

    def __init__(self, post: Post, root: str) -> None:
        super().__init__(post)
        self.root = root
        self.wanted: List[str] = []
        self.asked: Set[str] = set()
        self.server: Optional[_Server] = None
        self.retired: List[_Server] = []  # being shut down (so Ctrl-C meanwhile still reaps it)
        self.stamp: Dict[str, int] = {}
        self.current: Optional[int] = None  # run id in flight
        self._lock = threading.Lock()

    def _server(self) -> _Server:
        stamp = _path_stamp()
        if self.server is not None and self.server.alive() and stamp != self.stamp:
            self._retire()  # a package was installed or removed: its old code is pre-imported
        if self.server is None or not self.server.alive():
            self.stamp = stamp
            self.server = _Server(self.root, list(self.wanted), self._on_message)
        return self.server

    def _retire(self) -> None:
        old, self.server = self.server, None
        if old is not None:
            self.retired.append(old)
            old.close(5.0)
            self.retired.remove(old)

    def warm_up(self) -> None:
        self._server()

    def _on_message(self, server: _Server, msg: Dict[str, Any]) -> None:
        if msg.get("ev") == "exit":
            with self._lock:
                if self.current == msg.get("id"):
                    self.current = None
            self.post(("exit", ChildExit.from_code(int(msg.get("id", 0)),
                                                   int(msg.get("code", Outcome.CRASHED)))))
        elif msg.get("ev") == "busy":  # a second run while one is in flight: a bug here
            self.post(("exit", ChildExit(int(msg.get("id", 0)),
                                         lost="the rebuild server was still busy")))
        elif msg.get("ev") == "eof":
            if not server.info and server is self.server:
                self.wanted = []  # it died while pre-importing: the next one starts bare
            with self._lock:
                lost, self.current = self.current, None
            if lost is not None and server is self.server:
                self.post(("exit", ChildExit(lost, lost="the rebuild server process died")))

    def start(self, run_id: int, req: Dict[str, Any]) -> None:
        with self._lock:
            self.current = run_id
        if not self._server().send({"op": "run", "id": run_id, "req": req}):
            self.server = None  # died: the next rebuild starts a new one
            with self._lock:
                self.current = None
            self.post(("exit", ChildExit(run_id, lost="the rebuild server process died")))

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        if self.server is not None:
            self.server.send({"op": "signal", "sig": int(sig)})

    def preload(self, names: List[str]) -> None:
        new = [n for n in names if n not in self.asked]
        if not new:
            return
        self.asked.update(new)
        self.wanted.extend(new)
        self._retire()
        self._server()

    def close(self, timeout: float = 10.0) -> None:
        for old in list(self.retired):
            old.close(timeout)
        if self.server is not None:
            self.server.close(timeout)  # EOF: the server interrupts and reaps its child, exits
            self.server = None


def _path_stamp() -> Dict[str, int]:
    """Modification times of the site-packages folders on the import path: installing or
    removing a package changes one, and then the warm server must start over. (Not the
    project's or the current folder: saving a file there changes their time too.)"""
    out: Dict[str, int] = {}
    for p in sys.path:
        if os.path.basename(os.path.normpath(p or ".")) not in ("site-packages", "dist-packages"):
            continue
        try:
            out[p] = os.stat(p).st_mtime_ns
        except OSError:
            continue
    return out


class _Server:
    """The watcher's side of one warm server process."""

    def __init__(self, root: str, preload: List[str],
                 on_message: Callable[[_Server, Dict[str, Any]], None]) -> None:
        r, w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from zenbuild.watch.runner import serve; "
             "sys.exit(serve())", str(w), root, json.dumps(preload)],
            stdin=subprocess.PIPE, pass_fds=(w,),
        )
        os.close(w)
        self.replies = os.fdopen(r, "rb")
        self.on_message = on_message
        self.ready = threading.Event()
        self.info: Dict[str, Any] = {}
        threading.Thread(target=self._read, name="zenbuild-watch-server", daemon=True).start()

    def _read(self) -> None:
        for line in self.replies:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("ev") == "ready":
                self.info = msg
                self.ready.set()
            self.on_message(self, msg)
        self.ready.set()
        self.on_message(self, {"ev": "eof"})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, msg: Dict[str, Any]) -> bool:
        stdin = self.proc.stdin
        if stdin is None or not self.alive():
            return False
        try:
            stdin.write((json.dumps(msg) + "\n").encode())
            stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def close(self, timeout: float) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the warm server process -------------------------------------------------------------------
def _send(out: IO[bytes], msg: Dict[str, Any]) -> None:
    out.write((json.dumps(msg) + "\n").encode())
    out.flush()


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (
        status >> 8 if os.WIFEXITED(status) else -os.WTERMSIG(status))


def _reap(pid: int, wait: float) -> Optional[int]:
    """Exit code of child ``pid`` once it exits, waiting up to ``wait`` seconds; else None."""
    deadline = time.monotonic() + wait
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _exit_code(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def _child(req: Dict[str, Any], close_fds: List[int]) -> None:
    code = int(Outcome.CRASHED)
    try:
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from zenbuild.watch.child import run_child

        code = int(run_child(req))
    except KeyboardInterrupt:
        code = int(Outcome.INTERRUPTED)
    except BaseException:  # noqa: B902 - never return into the server's loop
        traceback.print_exc()
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        forks = sys.modules.get("zenbuild.trace.forks")
        if forks is not None:  # os._exit runs no atexit: the spools its steps' workers left
            forks.sweep_own()
        os._exit(code)


def serve() -> int:
    """The warm server: ``python -c '...serve()' REPLY_FD ROOT PRELOAD_JSON``. Reads JSON
    requests on stdin (run, signal), forks one child per run, reports its exit on REPLY_FD.
    Exits when stdin closes, interrupting and reaping its child first."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the watcher's to handle
    reply_fd, root, preload = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    here = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", here, root)]
    t0 = time.perf_counter()
    for name in _WARM:
        importlib.import_module(name)
    from zenbuild.project import is_project_module, source_predicate

    # the project's source outside the root too: kept warm, a rebuild would run its old code
    is_project = source_predicate(root, os.path.join(root, ".zenbuild"))
    ok = 0
    for name in preload:
        try:
            importlib.import_module(name)
            ok += 1
        except BaseException:  # noqa: B902,S110 - a module that will not preload is imported by the child
            pass
    for name, mod in list(sys.modules.items()):  # never keep a project module warm
        if mod is not None and is_project_module(mod, is_project):
            del sys.modules[name]
    import gc

    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()  # children share these pages instead of touching them on their first GC
    out = os.fdopen(reply_fd, "wb")
    _send(out, {"ev": "ready", "preloaded": ok, "seconds": round(time.perf_counter() - t0, 4)})
    child: Optional[int] = None
    child_id: Any = None
    pidfd: Optional[int] = None
    buf = b""
    while True:
        fds = [0] + ([pidfd] if pidfd is not None else [])
        timeout = None if child is None or pidfd is not None else 0.01
        ready, _, _ = select.select(fds, [], [], timeout)
        if child is not None:
            code = _reap(child, 0)
            if code is not None:
                _send(out, {"ev": "exit", "id": child_id, "code": code})
                if pidfd is not None:
                    os.close(pidfd)
                child, pidfd = None, None
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            if child is not None:
                code = _reap(child, GRACE_S)  # a Ctrl-C on the terminal reached it already
                if code is None:
                    try:
                        os.kill(child, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                    code = _reap(child, 5.0)
                if code is None:
                    os.kill(child, signal.SIGKILL)
                    code = _reap(child, 5.0)
                _send(out, {"ev": "exit", "id": child_id, "code": code if code is not None else -signal.SIGKILL})
            return 0
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("op") == "signal":
                if child is not None:
                    try:
                        os.kill(child, int(msg.get("sig", signal.SIGINT)))
                    except ProcessLookupError:
                        pass
            elif msg.get("op") == "run" and child is not None:
                _send(out, {"ev": "busy", "id": msg.get("id")})
            elif msg.get("op") == "run":
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(msg["req"], [reply_fd])
                child, child_id = pid, msg.get("id")
                pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
