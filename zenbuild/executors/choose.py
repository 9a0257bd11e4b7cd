"""Picks the executor (in-process, process pool, Dask) and remote cache a run asks for."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional, Tuple

from zenbuild.config import Config
from zenbuild.errors import ConfigError
from zenbuild.events import Reporter, Warning_
from zenbuild.executors import Executor, InProcessExecutor
from zenbuild.store.db import Store

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.executors.process import OutputSink
    from zenbuild.store.remote import RemoteCache

# The process pool and the remote cache (http.client, ssl, ...) are imported only when a run
# asks for them: together they cost ~30 ms of start-up that a serial, local run never needs.

EXECUTORS = ("local", "dask")


def choose_executor(
    root: str,
    kind: Optional[str] = None,
    jobs: Optional[int] = None,
    scheduler: Optional[str] = None,
    on_output: Optional[OutputSink] = None,
    store_path: Optional[str] = None,
) -> Executor:
    """``jobs``: None or 1 = serial in this process; N > 1 = N worker processes; 0 = one per
    CPU. ``kind`` "dask" sends steps to a Dask cluster at ``scheduler`` (or a LocalCluster).
    ``store_path``: workers write large values into that store themselves."""
    kind = kind or "local"
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r}; choose one of: {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 0:
        raise ConfigError(f"-j {jobs}: expected 0 (one per CPU) or a positive number of jobs")
    if jobs == 0:
        from zenbuild.executors.process import cpu_count

        jobs = cpu_count()
    if kind == "dask":
        from zenbuild.executors.dask_executor import DaskExecutor

        return DaskExecutor(root, scheduler, jobs, on_output, store_path)
    if scheduler:
        raise ConfigError("--scheduler only applies with --executor dask; add --executor dask "
                          "or drop --scheduler.")
    if jobs is None or jobs == 1:
        return InProcessExecutor()
    from zenbuild.executors.process import ProcessExecutor

    return ProcessExecutor(jobs, root, on_output, store_path)


def execution_for(
    config: Config,
    store: Store,
    reporter: Reporter,
    executor: Optional[Executor],
    jobs: Optional[int],
    kind: Optional[str],
    scheduler: Optional[str],
    remote_url: Optional[str],
    upload: Optional[bool],
) -> Tuple[Executor, Optional[RemoteCache]]:
    """The executor and remote cache a run uses: explicit arguments first, then zenbuild.toml.
    A step's captured output (from worker processes) is printed as ``[step] line``."""

    def on_output(step: str, text: str) -> None:
        line = getattr(reporter, "line", None)
        for row in text.rstrip("\n").split("\n"):
            if line is not None:
                line(f"[{step}] {row}")
            else:
                sys.stdout.write(f"[{step}] {row}\n")

    if executor is None:
        executor = choose_executor(config.root, kind, jobs if jobs is not None else config.jobs,
                                   scheduler, on_output, store.path)

    def warn(message: str) -> None:
        reporter.handle(Warning_(message=message))

    if remote_url is None and not config.cache.get("remote"):
        return executor, None
    from zenbuild.store.remote import open_remote

    return executor, open_remote(dict(config.cache), store, warn, remote_url, upload)
