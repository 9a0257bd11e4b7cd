"""The Dask executor (`--executor dask`): steps that missed the cache run on a Dask cluster.

A LocalCluster of worker processes is started when no scheduler address is given.

A large value never travels through the main process (the client): the worker that made it
writes it into the store and sends back where it is (worker_store.store_value); its consumers
are sent where its arrays lie in the store (the blob's path, offset, dtype, shape and
strides, see ``pack_args``), and each worker maps them copy-on-write. A worker that does not
see the store (no shared filesystem) sends its values back, and the client stores them.

A real cluster needs, on every worker: the same Python packages (zenbuild included), the project
importable at the same path (a shared filesystem, or the project installed), and, for steps
that read File inputs or write Outputs, those paths visible at the same absolute location.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Dict, List, Optional

from zenbuild.errors import ConfigError
from zenbuild.executors import Executor, Outcome, Task
from zenbuild.executors.process import (
    NotImportable,
    OutputSink,
    cpu_count,
    fn_ref,
    print_output,
    received,
    run_packed,
)
from zenbuild.executors.worker_store import Sending

MISSING = (
    "--executor dask needs Dask's distributed scheduler, which is not installed. Install the "
    "extra with `pip install 'zenbuild[dask]'` (or `pip install 'dask[distributed]'`), or run "
    "without --executor dask."
)


def require_dask() -> None:
    """Refuse a run that asks for Dask where it is not installed, before any step runs; the
    import itself (1-2 s) waits until a step has to execute, so a run served from the cache
    never pays it."""
    import importlib.util

    try:
        found = importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(MISSING)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(MISSING) from None
    return distributed


class DaskExecutor(Executor):
    """Submits each task to a Dask cluster; the cluster (or the client) starts on first use."""

    def __init__(self, root: str, address: Optional[str] = None, jobs: Optional[int] = None,
                 on_output: Optional[OutputSink] = None, store_path: Optional[str] = None) -> None:
        require_dask()
        self.distributed: Any = None
        self.root = root
        self._sending = Sending(store_path)  # workers that see it write large values there
        # this run: a worker that served an earlier one imports the project's modules again
        # (executors/freshness.py), as a new process would
        self._session = uuid.uuid4().hex
        self.address = address
        self.workers = jobs or cpu_count()
        self.on_output = on_output
        self.slots = max(1, self.workers) if address is None else max(1, jobs or 64)
        self._client: Any = None
        self._cluster: Any = None
        self._futures: Dict[Any, str] = {}
        self._ready: List[Outcome] = []

    def _get_client(self) -> Any:
        if self._client is None:
            d = self.distributed = _distributed()
            if self.address:
                try:
                    self._client = d.Client(self.address, timeout="10s")
                except OSError as e:
                    raise ConfigError(
                        f"cannot reach the Dask scheduler at {self.address} ({e}). Start it "
                        "(`dask scheduler`) or fix --scheduler."
                    ) from None
            else:
                self._cluster = d.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                    # without its dashboard the scheduler still serves HTTP, on Dask's 8787
                    # unless told otherwise, and where another cluster on the machine holds
                    # that port it warns and takes another: take a free loopback port quietly
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                )
                self._client = d.Client(self._cluster)
        return self._client

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
        fut = self._get_client().submit(  # "py": a Dask worker shares fds 1, 2 with its threads
            run_packed, task.name, ref, self.root, packed, task.trace, self._sending.target, "py",
            self._session, key=f"zenbuild-{task.name}-{uuid.uuid4().hex[:8]}", pure=False,
        )
        self._futures[fut] = task.name

    def wait(self) -> List[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        done = self.distributed.wait(list(self._futures), return_when="FIRST_COMPLETED").done
        outcomes: List[Outcome] = []
        for fut in done:
            name = self._futures.pop(fut)
            if fut.status != "finished":
                exc = fut.exception()
                outcomes.append(Outcome(name, False, error=(
                    f"Dask could not run step {name}: {type(exc).__name__}: {exc}\n")))
                continue
            try:  # (the value itself is loaded by received(): its failure is the step's)
                result = fut.result()
            except Exception as e:  # noqa: BLE001 - what Dask raised fetching the result
                outcomes.append(Outcome(name, False, error=(
                    f"step {name} finished but its result could not be fetched from its Dask "
                    f"worker: {type(e).__name__}: {e}\n")))
                continue
            outcome, text = received(result)
            print_output(self.on_output, name, text)
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        for fut in list(self._futures):
            fut.cancel()
        self._futures.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._sending.close()
