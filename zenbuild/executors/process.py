"""The process-pool executor (`-j N`): only the call to each step runs in a worker process.

Workers find each step function by module and qualified name; fingerprints, look-ups and store
writes stay in the main process, which also prints each step's captured output as whole lines
prefixed by its name.

Workers are forked on Linux when the main process has no other thread (a fork then copies no
lock another thread holds; the children never touch the inherited SQLite or HTTP connections,
and leave with os._exit): a worker starts in ~20 ms with the project already imported, against
~200 ms for a spawned one, which re-imports zenbuild and the project. Otherwise (other threads,
macOS, Windows) they are spawned. Either way a task names its function by module and qualified
name, as a Dask worker needs too, so a step must be a module-level function (``@step`` at the
top of a module), which is how steps are written anyway.

A worker ends when the main process does, however that ends (kill -9, the OOM killer): it would
otherwise wait on its task queue for ever. See die_with_parent; a forked worker also drops its
copy of the workspace lock's descriptor at once (store/lock.py).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.executors import Executor, Outcome, Task, call_task
from zenbuild.executors.freshness import fresh_project
from zenbuild.executors.worker_store import (
    Packed,
    Sending,
    StoreTarget,
    store_value,
    unpack_args,
)
from zenbuild.store.blobs import StoredValue
from zenbuild.trace import TraceOptions, unrecorded

OutputSink = Callable[[str, str], None]  # (step name, captured text)


class NotImportable(Exception):
    """A step function cannot be found again by module and qualified name in another process."""


@dataclass(frozen=True)
class FnRef:
    """How a worker finds a step function: module, qualified name, and a digest of its code to
    make sure the worker runs the code that was fingerprinted."""

    module: str
    qualname: str
    code: str


_REFS: Dict[Any, FnRef] = {}


def fn_ref(fn: Callable[..., Any]) -> FnRef:
    ref = _REFS.get(fn)
    if ref is not None:
        return ref
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", "")
    if not module or not qual or "<locals>" in qual or "<lambda>" in qual:
        raise NotImportable(
            f"{qual or fn!r} is not a module-level function, so a worker process cannot import "
            "it. Define the step at the top level of a module, or run with -j 1."
        )
    ref = FnRef(module, qual, _code_digest(fn))
    _REFS[fn] = ref
    return ref


def _code_digest(fn: Callable[..., Any]) -> str:
    """What a function's code is, the same whether it was compiled from source or loaded from a
    .pyc (marshal.dumps is not: it records which strings were interned and shared)."""
    from zenbuild.fingerprint.running import code_shape

    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return hashlib.sha256(repr(code_shape(code)).encode("utf-8", "surrogatepass")).hexdigest()


def resolve_ref(ref: FnRef, root: str) -> Callable[[], Any]:
    """Import the function ``ref`` names (a Step's ``.fn``), with ``root`` first on sys.path
    (a worker does it inside freshness.fresh_project, which re-imports edited modules)."""
    if root not in sys.path:
        sys.path.insert(0, root)
    obj: Any = importlib.import_module(ref.module)
    for part in ref.qualname.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, "fn", obj)  # module attributes hold Step objects; run the plain function
    if ref.code and _code_digest(fn) != ref.code:
        raise NotImportable(
            f"the code of {ref.module}.{ref.qualname} in the worker differs from the code that "
            "was fingerprinted (was the file edited during the run?). Run again."
        )
    return fn  # type: ignore[no-any-return]


def run_ref(name: str, ref: FnRef, root: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
            capture: str = "fd", trace: Optional[TraceOptions] = None,
            target: Optional[StoreTarget] = None) -> Tuple[Outcome, str]:
    """Worker side: resolve and call the step, capturing what it prints. ``capture`` is "fd"
    (file descriptors 1 and 2, so child processes and C code are caught too) or "py" (only
    sys.stdout/sys.stderr, for workers that share their descriptors with other threads).
    ``trace``: record the step's dynamic trace, which comes back on the Outcome. ``target``:
    a large value is written into the store here and comes back as a StoredValue."""
    if capture == "fd":
        outcome, text = _with_fd_capture(lambda: _call(name, ref, root, args, kwargs, trace))
    else:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            outcome = _call(name, ref, root, args, kwargs, trace)
        text = buf.getvalue()
    if outcome.ok and target is not None:
        outcome.value = store_value(outcome.value, target, root)
    return outcome, text


def received(result: Tuple[Outcome, str]) -> Tuple[Outcome, str]:
    """run_packed's result as an executor gets it: the value itself, loaded here from the
    pickle its worker made (``Piped``), also from a worker that handed it over without
    pickling it (a thread in this process). A value that cannot be loaded here fails its
    step, and only it (the pool's own unpickling of it used to break the pool)."""
    outcome = result[0]
    if isinstance(outcome.value, Piped):
        try:
            outcome.value = outcome.value.get()
        except Exception as e:  # noqa: BLE001 - whatever unpickling the value raised
            outcome.ok, outcome.value = False, None
            outcome.error = (
                f"step {outcome.name} returned a value that its worker sent back but this "
                f"process cannot load: {type(e).__name__}: {e}. Return plain data, or run the "
                "step in process (-j 1).\n")
    return result


class Piped:
    """A step's value on its way back from a worker: its pickle, made in the worker with the
    store's reducers (executors.pipe: protocol 5 whatever the pipe uses, torch tensors of
    every dtype, the project's value types when it needs them), and loaded by ``received`` in the
    main process rather than by the pipe: multiprocessing's queues pickle at the default
    protocol, 4 below Python 3.14, and numpy 2.4 unpickles a protocol-4 big-endian array as a
    native-endian one (a `>i4` value came back `<i4`, with other bytes and another digest
    than the same step run in process); and a value the pool's thread fails to load breaks
    the pool, failing the steps running beside it."""

    __slots__ = ("value", "data")

    def __init__(self, value: Any, data: bytes) -> None:
        self.value = value  # _SENT once it came through a pipe: then only ``data`` is here
        self.data = data

    @classmethod
    def of(cls, value: Any) -> Piped:
        """The value with its pickle made now (raises what pickling raises)."""
        from zenbuild.executors import pipe

        return cls(value, pipe.dumps(value))

    def get(self) -> Any:
        """The value (loaded from ``data`` when it came through a pipe)."""
        if self.value is not _SENT:
            return self.value
        from zenbuild.executors import pipe

        return pipe.loads(self.data)

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        return _arrived, (self.data,)


_SENT = object()


def _arrived(data: bytes) -> Piped:
    """A Piped value unpickled on the other side of a pipe: its bytes, loaded by get()."""
    return Piped(_SENT, data)


def _call(name: str, ref: FnRef, root: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
          trace: Optional[TraceOptions] = None) -> Outcome:
    try:
        fn = resolve_ref(ref, root)
    except NotImportable as e:
        return Outcome(name, False, error=f"{e}\n")
    except Exception as e:
        return Outcome(name, False, error=f"cannot import step {name} in the worker: "
                       f"{type(e).__name__}: {e}\n")
    return call_task(Task(name, fn, args, kwargs, trace))


def run_packed(name: str, ref: FnRef, root: str, packed: Packed,
               trace: Optional[TraceOptions], target: Optional[StoreTarget],
               capture: str = "fd", session: Optional[str] = None) -> Tuple[Outcome, str]:
    """Worker side (-j, Dask): with the project's modules as their files are now, unpack the
    arguments (arrays of store blobs mapped here) and run the step (``run_ref``: ``capture``,
    and a large value written into the store at ``target``)."""
    with fresh_project(root, session):  # before the arguments: they may be project instances
        try:
            args, kwargs = unpack_args(packed)
        except Exception as e:  # noqa: BLE001 - whatever unpickling them raised
            return Outcome(name, False, error=(
                f"step {name}: its arguments cannot be loaded in the worker process: "
                f"{type(e).__name__}: {e}. Pass plain data, or run with -j 1.\n")), ""
        try:
            outcome, text = run_ref(name, ref, root, args, kwargs, capture, trace, target)
        except KeyboardInterrupt:  # raised by the step: its failure (a Ctrl-C of the run
            # reaches the main process too, which stops the run); out of a Dask worker it
            # killed the worker, four times, and out of a -j one it read "finished but..."
            return Outcome(name, False, error=(
                f"step {name} raised KeyboardInterrupt in its worker process\n")), ""
    if outcome.ok and not isinstance(outcome.value, (StoredValue, type(None))):
        try:  # what goes back is pickled here (Piped), so that a value that cannot be is the
            outcome.value = Piped.of(outcome.value)  # step's failure, said once
        except Exception as e:  # noqa: BLE001 - whatever pickling the value raised
            return Outcome(name, False, error=(
                f"step {name} returned a value that cannot be sent back from the worker: "
                f"{type(e).__name__}: {e}. A step's value must pickle to leave a worker "
                "process; return plain data, or run the step in process (-j 1).\n"),
                duration=outcome.duration), text
    return outcome, text


def _with_fd_capture(body: Callable[[], Outcome]) -> Tuple[Outcome, str]:
    import contextlib

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(1), os.dup(2)
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        # sys.stdout may not write to fd 1 (a forked child inherits whatever the parent had)
        text_out = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        try:
            with contextlib.redirect_stdout(text_out), contextlib.redirect_stderr(text_out):
                outcome = body()
        finally:
            text_out.close()  # flushes; fd 1 stays open (closefd=False)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        tmp.seek(0)
        text = tmp.read().decode("utf-8", errors="replace")
    return outcome, text


def _worker_init(paths: List[str], parent: int = 0, pdeathsig: bool = False) -> None:
    if parent:
        die_with_parent(parent, pdeathsig)
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)


def die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Worker side, first thing: make this process end when ``parent`` (the main process of the
    run) does, however it ends (kill -9, the OOM killer). A worker outliving it would wait on
    its task queue for ever (a sibling holds the other end of the pipe), and one that was
    forked would keep what it inherited open. ``pdeathsig``: Linux's PR_SET_PDEATHSIG kills it
    when the thread that forked it ends, so only for workers forked by the main thread (the
    one thread then, see start_method); others (spawned, on macOS or when threads run, the
    spawning thread may not live as long as the pool) get a watchdog thread."""
    if pdeathsig and _set_pdeathsig():
        if os.getppid() != parent:  # it died before the prctl: no signal will come
            os._exit(1)
        return
    import threading

    if _parent_gone(parent):
        os._exit(1)
    threading.Thread(target=unrecorded, args=(_watch_parent, parent), daemon=True,
                     name="zenbuild-parent-watch").start()


def _set_pdeathsig() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) for this process; whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)) == 0  # 1: PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):  # pragma: no cover - no ctypes, no prctl
        return False


def _parent_gone(parent: int) -> bool:
    # an orphan is adopted by init or a subreaper (Windows keeps the parent's pid: the
    # sentinel below tells it there)
    return sys.platform != "win32" and os.getppid() != parent


def _watch_parent(parent: int) -> None:
    """The watchdog: ends this process once ``parent`` is gone. The pipe multiprocessing
    gives a spawned child (its parent sentinel) reaches end of file then; a forked sibling
    may hold it open too, so the parent pid is looked at every second as well."""
    from multiprocessing.connection import wait

    proc = multiprocessing.parent_process()
    sentinel = getattr(proc, "sentinel", None)
    while not _parent_gone(parent):
        if sentinel is None:
            time.sleep(1.0)
        elif wait([sentinel], timeout=1.0):
            break
    os._exit(1)


def print_output(sink: Optional[OutputSink], name: str, text: str) -> None:
    if text and sink is not None:
        sink(name, text)


def failed_remotely(name: str, e: BaseException) -> Outcome:
    """An Outcome for a task whose worker could not return a result."""
    if isinstance(e, BrokenProcessPool):
        msg = (f"step {name} got no result: a worker process died (killed, out of memory, or "
               "crashed in native code) while it ran or waited, in this step or in one running "
               "beside it. Run again (with -j 1 to find the culprit).\n")
    else:
        msg = (f"step {name} finished but its result could not be sent back from the worker: "
               f"{type(e).__name__}: {e}. Return plain data or a picklable object.\n")
    return Outcome(name, False, error=msg)


def start_method() -> str:
    """"fork" on Linux while this process has a single thread (all workers are forked at once,
    before the pool starts its own thread), else "spawn"."""
    import threading

    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    return "spawn"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ProcessExecutor(Executor):
    """Up to ``jobs`` steps at once in a pool of worker processes (forked or spawned, see
    start_method), started when the first step has to execute."""

    def __init__(self, jobs: int, root: str, on_output: Optional[OutputSink] = None,
                 store_path: Optional[str] = None) -> None:
        self.slots = max(1, jobs)
        self.root = root
        self.on_output = on_output
        self._sending = Sending(store_path)  # workers write large values there
        self._pool: Optional[cf.ProcessPoolExecutor] = None
        self._futures: Dict[cf.Future[Tuple[Outcome, str]], str] = {}
        self._ready: List[Outcome] = []

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import threading

            sys.stdout.flush()  # a forked child must not inherit unwritten output
            sys.stderr.flush()
            method = start_method()
            # Forked here and now, by this thread, the only one (ProcessPoolExecutor forks
            # every worker at the first submit): PR_SET_PDEATHSIG fits (die_with_parent).
            pdeathsig = method == "fork" and threading.current_thread() is threading.main_thread()
            if pdeathsig:
                import ctypes  # noqa: F401 - imported once here, not in every worker
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.slots,
                mp_context=multiprocessing.get_context(method),
                initializer=_worker_init,
                initargs=([self.root, *[p for p in sys.path if p]], os.getpid(), pdeathsig),
            )
        return self._pool

    def submit(self, task: Task) -> None:
        try:
            ref = fn_ref(task.fn)
        except NotImportable as e:
            self._ready.append(Outcome(task.name, False, error=f"step {task.name}: {e}\n"))
            return

        packed = self._sending.pack(task)
        if isinstance(packed, Outcome):
            self._ready.append(packed)
            return

        def send() -> cf.Future[Tuple[Outcome, str]]:
            return self._get_pool().submit(
                run_packed, task.name, ref, self.root, packed, task.trace,
                self._sending.target)

        try:
            fut = send()
        except BrokenProcessPool:  # a worker died since the last wait(): start a fresh pool
            self._discard_pool()
            fut = send()
        self._futures[fut] = task.name

    def _discard_pool(self) -> None:
        if self._pool is not None:
            # Every task still out belongs to the broken pool: report it failed now rather
            # than wait on its future (a future cancelled by the shutdown below may never be
            # marked done, and waiting on it would hang the run).
            for name in self._futures.values():
                self._ready.append(failed_remotely(name, BrokenProcessPool("pool broken")))
            self._futures.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None  # the next submit starts a fresh pool

    def wait(self) -> List[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        done, _ = cf.wait(list(self._futures), return_when=cf.FIRST_COMPLETED)
        outcomes: List[Outcome] = []
        broken = False
        for fut in done:
            name = self._futures.pop(fut)
            try:
                exc = fut.exception()
            except cf.CancelledError:
                # a task still queued in a pool that broke and was shut down meanwhile
                exc = BrokenProcessPool("the worker pool was shut down after a worker died")
            if exc is not None:
                broken = broken or isinstance(exc, BrokenProcessPool)
                outcomes.append(failed_remotely(name, exc))
                continue
            outcome, text = received(fut.result())
            print_output(self.on_output, name, text)
            outcomes.append(outcome)
        if broken:
            self._discard_pool()
        return outcomes

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._sending.close()
