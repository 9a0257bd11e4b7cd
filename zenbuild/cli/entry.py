"""The `zenbuild` program: exit codes and signals, and a fast path that runs `zenbuild run`
without importing click when its arguments are the common ones (click, and the inspect module it
pulls in, cost ~10-15 ms of every start). Everything else goes to the click CLI in cli.py."""

from __future__ import annotations

import os
import sys
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
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        global _handler_pid
        _handler_pid = os.getpid()
        signal.signal(signal.SIGTERM, _terminate)
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
