"""`zenbuild run` itself, without click: the command body shared by the click command and the
start-up fast path, and the fast path's parser for the common flags."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

# Flags the fast path understands: option -> (keyword, takes a value). Anything else (help,
# -j, --executor, --format, remote-cache options, bundled short flags...) goes through click.
_FLAGS = {
    "--no-cache": ("no_cache", False),
    "--dry-run": ("dry_run", False),
    "--explain": ("explain", False),
    "--keep-going": ("keep_going", False),
    "-k": ("keep_going", False),
    "--no-wait": ("no_wait", False),
    "--json": ("as_json", False),
    "-q": ("quiet", False),
    "--quiet": ("quiet", False),
    "-v": ("verbose", False),
    "--verbose": ("verbose", False),
    "--param": ("params", True),
    "-p": ("params", True),
    "--project-dir": ("project_dir", True),
    "--step": ("steps", True),
    "--rerun": ("rerun", True),
}
_REPEATABLE = ("params", "steps", "rerun")


def fast_parse(args: List[str]) -> Optional[Dict[str, Any]]:
    """The keyword arguments of run_command() for ``args`` (what follows `run`), or None when
    anything is unusual, so that click parses (and reports errors) as usual."""
    opts: Dict[str, Any] = {"pipeline": None, "params": []}
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("-") or a == "-":
            if opts["pipeline"] is not None:
                return None
            opts["pipeline"] = a
            continue
        name, eq, inline = a.partition("=")
        spec = _FLAGS.get(name if name.startswith("--") else a)
        if spec is None:
            return None
        dest, takes_value = spec
        if not takes_value:
            if eq:
                return None
            opts[dest] = True
            continue
        if eq and name.startswith("--"):
            value = inline
        elif i < len(args):
            value = args[i]
            i += 1
        else:
            return None  # click says the option needs an argument
        if dest in _REPEATABLE:
            opts.setdefault(dest, []).append(value)
        elif dest in opts:
            return None  # given twice: let click decide
        else:
            opts[dest] = value
    return opts


def run_command(
    pipeline: Optional[str] = None,
    params: Optional[List[str]] = None,
    no_cache: bool = False,
    dry_run: bool = False,
    explain: bool = False,
    keep_going: bool = False,
    no_wait: bool = False,
    jobs: Optional[int] = None,
    executor_name: Optional[str] = None,
    dask_scheduler: Optional[str] = None,
    remote_cache: Optional[str] = None,
    remote_cache_upload: Optional[bool] = None,
    as_json: bool = False,
    fmt: str = "text",
    quiet: bool = False,
    verbose: bool = False,
    project_dir: Optional[str] = None,
    steps: Optional[List[str]] = None,
    rerun: Optional[List[str]] = None,
) -> int:
    """Run a pipeline as `zenbuild run` does; returns the exit code (0, or 1 if a step failed).
    Raises ZenbuildError for usage and configuration errors (with --json, after printing the
    error as a JSON object on stdout)."""
    from zenbuild.errors import ZenbuildError
    from zenbuild.events import ConsoleReporter, Reporter, json_summary
    from zenbuild.project import open_pipeline
    from zenbuild.run import run_bound

    json_fd = stdout_to_stderr() if as_json else None  # the JSON is all that goes to stdout
    try:
        opened = open_pipeline(project_dir, pipeline, list(params or []))
        config = opened.config
        log: List[str] = []
        reporter: Reporter = ConsoleReporter(
            stream=sys.stderr if as_json else sys.stdout,
            quiet=quiet, verbose=verbose, explain=explain, log=log,
        )
        if fmt == "github":
            from zenbuild.events import Fanout
            from zenbuild.inspect.github import GithubReporter

            reporter = Fanout(reporter, GithubReporter(config.root))
        result = run_bound(
            opened.bound, enable_cache=False if no_cache else None, config=config,
            reporter=reporter, dry_run=dry_run, explain=explain, keep_going=keep_going,
            wait=not no_wait, log=log, jobs=jobs, executor_name=executor_name,
            dask_scheduler=dask_scheduler, remote_cache=remote_cache,
            remote_upload=remote_cache_upload, graph=opened.graph,
            steps=list(steps or []) or None, rerun=list(rerun or []) or None,
        )
    except ZenbuildError as e:
        if json_fd is not None:
            write_json(json_fd, error_json(e))
            json_fd = None
        raise
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (cli.entry.Terminated): still one object
        if json_fd is not None:
            terminated = type(e).__name__ == "Terminated"
            write_json(json_fd, {"status": "interrupted", "exit_code": 143 if terminated else 130,
                                 "error": {"type": type(e).__name__, "message":
                                           "Terminated." if terminated else "Interrupted."}})
            json_fd = None
        raise
    finally:
        if json_fd is not None:
            restore_stdout(json_fd, close=False)
    if json_fd is not None:
        write_json(json_fd, json_summary(result))
    return 0 if result.status == "succeeded" else 1


def stdout_to_stderr() -> int:
    """Point file descriptor 1 (and so sys.stdout, print() in steps, -j and Dask workers started
    from here, and native code) at stderr; returns a descriptor for the real stdout."""
    import os

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


def restore_stdout(saved: int, close: bool = True) -> None:
    import os

    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 1)
    if close:
        os.close(saved)


def write_json(saved: int, data: Dict[str, Any]) -> None:
    """Put fd 1 back and write ``data`` as one JSON line on it."""
    restore_stdout(saved)
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def error_json(e: Any) -> Dict[str, Any]:
    """The JSON `run --json` prints for an error that stops the run before or outside steps."""
    error: Dict[str, Any] = {"type": type(e).__name__, "message": str(getattr(e, "message", e))}
    for key, attr in (("file", "filename"), ("line", "lineno"), ("error_type", "error_type"),
                      ("traceback", "traceback_text")):
        value = getattr(e, attr, None)
        if value:
            error[key] = value
    return {"status": "error", "exit_code": int(getattr(e, "exit_code", 2)), "error": error}
