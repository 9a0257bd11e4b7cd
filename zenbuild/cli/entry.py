"""The `zenbuild` program: exit codes and signals, and a fast path that runs `zenbuild run`
without importing click when its arguments are the common ones (click, and the inspect module it
pulls in, cost ~10-15 ms of every start). Everything else goes to the click CLI in cli.py."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, List, Optional

from zenbuild.errors import ZenbuildError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, `kill`): unwind like Ctrl-C, so finished steps are kept."""


_handler_pid = 0  # the process whose main() installed _terminate


def _terminate(signum: int, frame: Any) -> None:
    if os.getpid() != _handler_pid:
        # A worker forked by -j N inherits this handler, and must die of the signal as it would
        # without zenbuild: that is how the process pool stops the other workers when one died.
        # Raised there, Terminated is caught by the pool's worker loop, which then waits for
        # work forever, and Python 3.13's pool waits for it (the run hung).
        import signal

        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


_mask = threading.local()  # (at a fork) whether SIGTERM was blocked in the forking thread


def _fork_before() -> None:
    import signal

    try:
        _mask.had = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (OSError, ValueError):  # pragma: no cover - no pthread_sigmask
        _mask.had = True


def _fork_parent() -> None:
    import signal

    if not getattr(_mask, "had", True):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _fork_child() -> None:
    import signal

    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # pragma: no cover - not the child's main thread
        pass
    if not getattr(_mask, "had", True):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def install_sigterm() -> None:
    """SIGTERM unwinds this process like Ctrl-C (Terminated), and kills a child it forks, as
    it would without zenbuild. The child gets the default action at once: SIGTERM is blocked
    in the forking thread while it forks, and the child sets SIG_DFL before unblocking it (a
    signal arriving between fork() and the child's first Python code would set the flag of
    the inherited Python-level handler, which the interpreter clears after a fork: the signal
    was lost, and a pool worker replaced just before exit, that multiprocessing's finalizer
    sends SIGTERM to, blocked it and the exit hung). _terminate's own check stays for a
    child forked with no os.register_at_fork. The handler is set through _signal, the C
    module signal wraps: importing signal (its enums) costs 3M instructions of every run,
    and the fork hooks import it only when a process forks."""
    try:
        import _signal as sig  # CPython's, and PyPy's
    except ImportError:  # pragma: no cover - another interpreter
        import signal as sig

    global _handler_pid
    _handler_pid = os.getpid()
    sig.signal(sig.SIGTERM, _terminate)
    if not _fork_hooks[0] and hasattr(os, "register_at_fork") \
            and hasattr(sig, "pthread_sigmask"):
        _fork_hooks[0] = True
        os.register_at_fork(before=_fork_before, after_in_parent=_fork_parent,
                            after_in_child=_fork_child)


_fork_hooks = [False]


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _paused(command: Any, opts: Any) -> Any:
    """``command(**opts)`` with the cyclic GC paused for zenbuild's own work, the pipeline's
    tracing included (a step's code still runs with it on: executors.call_task). At the end,
    what the command made (all of it still in the youngest generation, which the first
    allocation after the pause would scan whole: ~90 ms after a no-op of 5,000 steps) moves to
    the oldest, where it stays collectable, without being scanned now."""
    import gc

    from zenbuild.executors import GcPause

    GcPause.frozen_base = gc.get_freeze_count()  # the interpreter's own: no project code yet
    with GcPause():
        code = command(**opts)
        if gc.get_freeze_count() == GcPause.frozen_base:  # (what the code froze stays frozen)
            gc.freeze()
            gc.unfreeze()
    return code


def main(argv: Optional[List[str]] = None) -> Any:
    if threading.current_thread() is threading.main_thread():
        install_sigterm()
    args = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (surrogate
        if getattr(stream, "errors", None) == "strict":  # escapes) prints as its bytes
            try:
                stream.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
            except (AttributeError, ValueError):
                pass
    try:
        if args[:1] == ["run"]:
            from zenbuild.cli.runcmd import fast_parse, run_command

            opts = fast_parse(args[1:])
            if opts is not None:
                sys.exit(_paused(run_command, opts))
        from zenbuild.cli.commands import click_main

        return click_main(args)
    except ZenbuildError as e:
        _say(f"Error: {e.message}")
        sys.exit(e.exit_code)
    except Terminated:
        _say("Terminated.")
        sys.exit(143)
    except KeyboardInterrupt:
        _say("Interrupted.")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
