"""Options that several commands share."""

from __future__ import annotations

import click

project_dir_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Project root (default: the nearest folder upwards holding zenbuild.toml).",
)

no_wait_option = click.option("--no-wait", is_flag=True,
                               help="Fail at once if a run holds the project, instead of waiting.")
