"""The command line: click commands, thin: parse, call, map errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Optional

import click

from zenbuild.cli.cachecmd import cache
from zenbuild.cli.options import project_dir_option as _project_dir
from zenbuild.errors import ZenbuildError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zenbuild")
def cli() -> None:
    """zenbuild: run only what changed in your Python pipelines."""


cli.add_command(cache)


@cli.command()
@click.argument("pipeline", required=False)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Set a pipeline parameter (repeatable).")
@click.option("--no-cache", is_flag=True, help="Execute every step (run-level override).")
@click.option("--dry-run", is_flag=True, help="Print what would execute and why; execute nothing.")
@click.option("--explain", is_flag=True, help="Print why each executed step runs.")
@click.option("--keep-going", "-k", is_flag=True, help="Keep running independent steps after a failure.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another run holds the project.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=None,
              help="Run up to N steps at once in worker processes (0 = one per CPU; default 1 "
                   "= serial, in this process, or `jobs` in zenbuild.toml).")
@click.option("--executor", "executor_name", type=click.Choice(["local", "dask"]), default=None,
              help="Where steps run: local (default) or a Dask cluster.")
@click.option("--scheduler", "dask_scheduler", metavar="tcp://HOST:PORT", default=None,
              help="Dask scheduler address (default: a LocalCluster of worker processes).")
@click.option("--remote-cache", metavar="URL", default=None,
              help="Bazel HTTP cache URL to read (and write) results (default: [cache] remote).")
@click.option("--remote-cache-upload/--no-remote-cache-upload", default=None,
              help="Upload executed steps to the remote cache (default: only when CI is set).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout; logs go to stderr.")
@click.option("--format", "fmt", type=click.Choice(["text", "github"]), default="text",
              help="github: also print GitHub Actions annotations (::error per failed step).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary line.")
@click.option("-v", "--verbose", is_flag=True, help="Also print every step's reasons.")
@click.option("--step", "steps", multiple=True, metavar="NAME",
              help="Run only this step and what it needs (repeatable).")
@click.option("--rerun", "rerun", multiple=True, metavar="NAME",
              help="Execute this step even if cached; its dependents execute only if its output "
                   "changed (repeatable).")
@_project_dir
def run(
    pipeline: Optional[str],
    params: List[str],
    no_cache: bool,
    dry_run: bool,
    explain: bool,
    keep_going: bool,
    no_wait: bool,
    jobs: Optional[int],
    executor_name: Optional[str],
    dask_scheduler: Optional[str],
    remote_cache: Optional[str],
    remote_cache_upload: Optional[bool],
    as_json: bool,
    fmt: str,
    quiet: bool,
    verbose: bool,
    steps: List[str],
    rerun: List[str],
    project_dir: Optional[str],
) -> None:
    """Run PIPELINE (a name from zenbuild.toml or module:attribute; default: the first one)."""
    from zenbuild.cli.runcmd import run_command

    code = run_command(
        pipeline, list(params), no_cache, dry_run, explain, keep_going, no_wait, jobs,
        executor_name, dask_scheduler, remote_cache, remote_cache_upload, as_json, fmt, quiet,
        verbose, project_dir, list(steps), list(rerun),
    )
    if code:
        sys.exit(code)


_STARTER_TOML = """\
# zenbuild configuration. `zenbuild run` runs the first pipeline listed here.
pipelines = ["pipelines:hello"]
store = ".zenbuild"

[params]            # pipeline parameter defaults; `zenbuild run --param greeting=Hi` wins
# greeting = "Hi"

# [steps.greet]     # per-step settings
# enable_cache = false
"""

_STARTER_PY = '''\
"""A starter pipeline: edit a step, then `zenbuild run` again and watch what reruns."""

from zenbuild import File, Output, pipeline, step


@step
def read_names(src: File) -> list:
    return [line.strip() for line in src.read_text().splitlines() if line.strip()]


@step
def greet(names: list, greeting: str = "Hello") -> list:
    return [f"{greeting}, {name}!" for name in names]


@step
def write(lines: list, out: Output) -> None:
    out.write_text("\\n".join(lines) + "\\n")


@pipeline
def hello(names: str = "names.txt", greeting: str = "Hello"):
    lines = greet(read_names(File(names)), greeting=greeting)
    write(lines, Output("build/hello.txt"))
'''


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@_project_dir
def init(force: bool, project_dir: Optional[str]) -> None:
    """Write a starter zenbuild.toml and a small pipeline module."""
    root = os.path.abspath(project_dir or os.getcwd())
    os.makedirs(root, exist_ok=True)
    files = {
        "zenbuild.toml": _STARTER_TOML,
        "pipelines.py": _STARTER_PY,
        "names.txt": "Ada\nGrace\nLinus\n",
    }
    existing = [f for f in files if os.path.exists(os.path.join(root, f))]
    if existing and not force:
        raise ZenbuildError(
            f"{', '.join(existing)} already exist in {root}; not overwriting (use --force)."
        )
    for name, text in files.items():
        path = os.path.join(root, name)
        tmp = path + ".zenbuild-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        click.echo(f"wrote {os.path.relpath(path)}")
    click.echo("next: zenbuild run")


# --- watch commands (issue 3) ---
@cli.command()
@click.argument("pipeline", required=False)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Set a pipeline parameter (repeatable).")
@click.option("--debounce", "debounce_ms", type=click.IntRange(min=0), default=None, metavar="MS",
              help="Start a rebuild once no file event came for MS milliseconds (default 50, "
                   "or [watch] debounce_ms).")
@click.option("--poll/--no-poll", "poll", default=None,
              help="Poll the file system instead of using inotify/FSEvents (network drives).")
@click.option("--on-busy", type=click.Choice(["queue", "restart"]), default=None,
              help="A change during a rebuild: rebuild again after it (queue, the default) or "
                   "stop it and start over (restart).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary lines.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also print every step's reasons and every file event seen.")
@_project_dir
def watch(
    pipeline: Optional[str],
    params: List[str],
    debounce_ms: Optional[int],
    poll: Optional[bool],
    on_busy: Optional[str],
    quiet: bool,
    verbose: bool,
    project_dir: Optional[str],
) -> None:
    """Run PIPELINE, then rerun the steps a saved change invalidates, until Ctrl-C."""
    from zenbuild.watch.watcher import WatchOptions
    from zenbuild.watch.watcher import watch as run_watch

    _check_watch_args(pipeline, params, project_dir)

    sys.exit(run_watch(WatchOptions(
        project_dir=project_dir, pipeline=pipeline, params=tuple(params), debounce_ms=debounce_ms,
        poll=poll, on_busy=on_busy, quiet=quiet, verbose=verbose,
    )))


def _check_watch_args(pipeline: Optional[str], params: List[str],
                      project_dir: Optional[str]) -> None:
    """What no save can fix stops `watch` at once (exit 2), as it stops `run`: a --param that
    is not KEY=VALUE, and a pipeline name the configuration (when it reads) does not have.
    Everything else (a broken module, a bad zenbuild.toml) is reported and watched."""
    from zenbuild.config import resolve_pipeline_spec
    from zenbuild.errors import ConfigError, ParamError
    from zenbuild.project import load_project

    for pair in params:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            raise ParamError(f"--param {pair!r}: expected KEY=VALUE")
    try:
        config = load_project(project_dir)
    except ConfigError:
        return  # a broken zenbuild.toml: watch reports it and waits for the fix
    resolve_pipeline_spec(config, pipeline)  # raises ConfigError for an unknown name


# --- inspect commands: explain, status, graph, runs, dashboard (issue 4) ---

_param_opt = click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
                          help="Set a pipeline parameter, as for `run` (repeatable).")


@cli.command(short_help="Why a step would (or would not) execute next.")
@click.argument("step")
@click.argument("pipeline", required=False)
@_param_opt
@click.option("--no-cache", is_flag=True, help="Explain as for `run --no-cache`.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@_project_dir
def explain(step: str, pipeline: Optional[str], params: List[str], no_cache: bool,
            as_json: bool, project_dir: Optional[str]) -> None:
    """Why STEP would (or would not) execute in the next run: every difference between its
    current fingerprint and its last stored build, in words. Executes nothing."""
    from zenbuild.inspect.explain import evaluate, explain_json, explain_text
    from zenbuild.project import load_project

    ev = evaluate(load_project(project_dir), pipeline, list(params), [step], no_cache)
    click.echo(explain_json(ev, step) if as_json else explain_text(ev, step))


@cli.command(short_help="Which steps are stale; --check for hooks and CI.")
@click.argument("pipeline", required=False)
@_param_opt
@click.option("--check", is_flag=True,
              help="Exit 1 if a run would execute any cacheable step (for pre-commit and CI).")
@click.option("--all", "all_pipelines", is_flag=True,
              help="Every pipeline listed in zenbuild.toml, not just the first.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True, help="github: also print an ::error annotation per stale step.")
@_project_dir
def status(pipeline: Optional[str], params: List[str], check: bool, all_pipelines: bool,
           as_json: bool, fmt: str, project_dir: Optional[str]) -> None:
    """Every step as up to date or stale, with its first reason. Executes nothing. With
    --check: exit 0 when up to date, 1 when a step is stale (no_cache steps do not count),
    2 on error."""
    from zenbuild.inspect.explain import status_report
    from zenbuild.project import load_project

    out, problems = status_report(load_project(project_dir), pipeline, all_pipelines,
                                  list(params), "json" if as_json else fmt)
    click.echo(out)
    if check and problems:
        for message in problems:
            click.echo(message, err=True)
        sys.exit(1)


@cli.command(short_help="The DAG with each step's status in the last run.")
@click.argument("pipeline", required=False)
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "json"]),
              default="mermaid", show_default=True)
@click.option("--run", "run_id", default=None, metavar="RUN_ID",
              help="Show the statuses of this run (id, prefix or `last`) instead of the latest.")
@_project_dir
def graph(pipeline: Optional[str], fmt: str, run_id: Optional[str],
          project_dir: Optional[str]) -> None:
    """The pipeline's DAG with each step's status in its latest run (executed, cached, failed,
    skipped), shown by label and colour."""
    from zenbuild.inspect.render import RENDERERS, pipeline_graph
    from zenbuild.project import load_project

    click.echo(RENDERERS[fmt](pipeline_graph(load_project(project_dir), pipeline, run_id)))


@cli.group(invoke_without_command=True, short_help="Past runs; `runs show RUN_ID` for one.")
@click.option("--pipeline", "-P", default=None, help="Only runs of this pipeline.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_project_dir
@click.pass_context
def runs(ctx: click.Context, pipeline: Optional[str], limit: int, as_json: bool,
         project_dir: Optional[str]) -> None:
    """Past runs, newest first. `zenbuild runs show RUN_ID` shows one run's steps."""
    ctx.obj = project_dir
    if ctx.invoked_subcommand is not None:
        return
    from zenbuild.inspect.history import list_runs, open_store, runs_text, to_json
    from zenbuild.project import load_project

    store = open_store(load_project(project_dir))
    try:
        found = list_runs(store, pipeline, limit)
    finally:
        store.close()
    click.echo(to_json(found) if as_json else runs_text(found))


@runs.command("show")
@click.argument("run_id")
@click.option("--log", "show_log", is_flag=True, help="Also print the run's console log.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the log).")
@_project_dir
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, show_log: bool, as_json: bool,
              project_dir: Optional[str]) -> None:
    """Every step of run RUN_ID (an id, a unique prefix, or `last`): status, duration, reasons."""
    from zenbuild.inspect.history import find_run, open_store, run_text, to_json
    from zenbuild.project import load_project

    store = open_store(load_project(project_dir or ctx.obj))
    try:
        run = find_run(store, run_id)
    finally:
        store.close()
    click.echo(to_json(run) if as_json else run_text(run, show_log))


@cli.command(short_help="A local web page: runs, DAGs, statuses, logs.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes your run history.")
@_project_dir
def dashboard(port: int, host: str, project_dir: Optional[str]) -> None:
    """A local web page with the run history and, per run, the DAG, statuses, reasons and log."""
    from zenbuild.inspect.dashboard import serve
    from zenbuild.project import load_project

    serve(load_project(project_dir), host, port, announce=click.echo)

def click_main(args: List[str]) -> Any:
    """Parse ``args`` with click and run the command; entry.main maps zenbuild's own errors
    and signals to exit codes around this."""
    from zenbuild.cli.entry import Terminated

    try:
        return cli.main(args=args, prog_name="zenbuild", standalone_mode=False)
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt into Abort
        if isinstance(e.__cause__, Terminated):
            raise e.__cause__ from None
        raise KeyboardInterrupt from None
    except click.ClickException as e:
        e.show()
        code = 2 if e.exit_code == 2 else e.exit_code
        if args[:1] == ["run"] and "--json" in args:  # scripts parse stdout: say it there too
            from zenbuild.cli.runcmd import error_json

            error = error_json(e)
            error["exit_code"] = code
            sys.stdout.write(json.dumps(error) + "\n")
        sys.exit(code)


def main(argv: Optional[List[str]] = None) -> Any:
    """Kept for `python -c "from zenbuild.cli import main"` users; the program is entry.main."""
    from zenbuild.cli.entry import main as entry_main

    return entry_main(argv)
