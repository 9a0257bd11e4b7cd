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
}


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
        if dest == "params":
            opts["params"].append(value)
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
) -> int:
    """Run a pipeline as `zenbuild run` does; returns the exit code (0, or 1 if a step failed).
    Raises ZenbuildError for usage and configuration errors."""
    from zenbuild.events import ConsoleReporter, Reporter, json_summary
    from zenbuild.project import bind_pipeline, load_pipeline, load_project, parse_cli_params
    from zenbuild.run import run_bound

    config = load_project(project_dir)
    _spec, pipe = load_pipeline(config, pipeline)
    bound = bind_pipeline(pipe, config, parse_cli_params(pipe, list(params or [])))
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
        bound, enable_cache=False if no_cache else None, config=config, reporter=reporter,
        dry_run=dry_run, explain=explain, keep_going=keep_going, wait=not no_wait, log=log,
        jobs=jobs, executor_name=executor_name, dask_scheduler=dask_scheduler,
        remote_cache=remote_cache, remote_upload=remote_cache_upload,
    )
    if as_json:
        sys.stdout.write(json.dumps(json_summary(result)) + "\n")
        sys.stdout.flush()
    return 0 if result.status == "succeeded" else 1
