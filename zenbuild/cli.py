"""The command line: click commands, thin: parse, call, map errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Optional

import click

from .errors import ZenbuildError

_project_dir = click.option(
    "--project-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Project root (default: the nearest folder upwards holding zenbuild.toml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zenbuild")
def cli() -> None:
    """zenbuild: run only what changed in your Python pipelines."""


@cli.command()
@click.argument("pipeline", required=False)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Set a pipeline parameter (repeatable).")
@click.option("--no-cache", is_flag=True, help="Execute every step (run-level override).")
@click.option("--dry-run", is_flag=True, help="Print what would execute and why; execute nothing.")
@click.option("--explain", is_flag=True, help="Print why each executed step runs.")
@click.option("--keep-going", "-k", is_flag=True, help="Keep running independent steps after a failure.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another run holds the project.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout; logs go to stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the summary line.")
@click.option("-v", "--verbose", is_flag=True, help="Also print every step's reasons.")
@_project_dir
def run(
    pipeline: Optional[str],
    params: List[str],
    no_cache: bool,
    dry_run: bool,
    explain: bool,
    keep_going: bool,
    no_wait: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
    project_dir: Optional[str],
) -> None:
    """Run PIPELINE (a name from zenbuild.toml or module:attribute; default: the first one)."""
    from .api import bind_pipeline, load_pipeline, load_project, parse_cli_params, run_bound
    from .events import ConsoleReporter, json_summary

    config = load_project(project_dir)
    _spec, pipe = load_pipeline(config, pipeline)
    bound = bind_pipeline(pipe, config, parse_cli_params(pipe, list(params)))
    log: List[str] = []
    reporter = ConsoleReporter(
        stream=sys.stderr if as_json else sys.stdout,
        quiet=quiet, verbose=verbose, explain=explain, log=log,
    )
    result = run_bound(
        bound, enable_cache=False if no_cache else None, config=config, reporter=reporter,
        dry_run=dry_run, explain=explain, keep_going=keep_going, wait=not no_wait, log=log,
    )
    if as_json:
        click.echo(json.dumps(json_summary(result)))
    if result.status != "succeeded":
        sys.exit(1)


_STARTER_TOML = """\
# zenbuild configuration: https://github.com/ (see README)
pipelines = ["pipelines:hello"]
store = ".zenbuild"

[params]
# name = "world"

# [steps.shout]
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

# --- inspect commands: explain, status, graph, runs, dashboard (issue 4) ---

# --- cache and execution commands (issue 5) ---


def main(argv: Optional[List[str]] = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="zenbuild", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except ZenbuildError as e:
        click.echo(f"Error: {e.message}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
