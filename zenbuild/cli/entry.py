"""The `zenbuild` program: exit codes and signals, and a fast path that runs `zenbuild run`
without importing click when its arguments are the common ones (click, and the inspect module it
pulls in, cost ~10-15 ms of every start). Everything else goes to the click CLI in cli.py."""

from __future__ import annotations

import sys
from typing import Any, List, Optional

from zenbuild.errors import ZenbuildError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, `kill`): unwind like Ctrl-C, so finished steps are kept."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def main(argv: Optional[List[str]] = None) -> Any:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["run"]:
            from zenbuild.cli.runcmd import fast_parse, run_command

            opts = fast_parse(args[1:])
            if opts is not None:
                sys.exit(run_command(**opts))
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
