"""The Dask executor (`--executor dask`): steps that missed the cache run on a Dask cluster.

A LocalCluster of worker processes is started when no scheduler address is given; results come
back to the main process, which stores them.

A large value travels through the main process once: a step's result comes back and is
stored; its consumers are sent where its arrays lie in the store (the blob's path, offset,
dtype, shape and strides, see ``pack_args``), and each worker maps them copy-on-write, so
the bytes go from the store to the worker without passing through the client again.

A real cluster needs, on every worker: the same Python packages (zenbuild included), the project
importable at the same path (a shared filesystem, or the project installed), and, for steps
that read File inputs or write Outputs, those paths visible at the same absolute location.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import pickle
import uuid
from typing import Any, Dict, List, Optional, Tuple

from zenbuild.errors import ConfigError
from zenbuild.executors import Executor, Outcome, Task
from zenbuild.executors.process import (
    FnRef,
    NotImportable,
    OutputSink,
    cpu_count,
    fn_ref,
    print_output,
    run_ref,
)
from zenbuild.records import record
from zenbuild.serialize.buffers import buffer_address
from zenbuild.store.blobs import MappedBlob
from zenbuild.trace import TraceOptions

# An array at least this big, lying in a mapped store blob, is sent by reference.
BY_REFERENCE_MIN = 1 << 20

MISSING = (
    "--executor dask needs Dask's distributed scheduler, which is not installed. Install the "
    "extra with `pip install 'zenbuild[dask]'` (or `pip install 'dask[distributed]'`), or run "
    "without --executor dask."
)


def require_dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(MISSING) from None
    return distributed


class DaskExecutor(Executor):
    """Submits each task to a Dask cluster; the cluster (or the client) starts on first use."""

    def __init__(self, root: str, address: Optional[str] = None, jobs: Optional[int] = None,
                 on_output: Optional[OutputSink] = None) -> None:
        self.distributed = require_dask()
        self.root = root
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
            d = self.distributed
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
                )
                self._client = d.Client(self._cluster)
        return self._client

    def submit(self, task: Task) -> None:
        try:
            ref = fn_ref(task.fn)
        except NotImportable as e:
            self._ready.append(Outcome(task.name, False, error=f"step {task.name}: {e}\n"))
            return
        packed = pack_args(tuple(task.args), dict(task.kwargs))
        fut = self._get_client().submit(
            run_packed, task.name, ref, self.root, packed, task.trace,
            key=f"zenbuild-{task.name}-{uuid.uuid4().hex[:8]}", pure=False,
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
            outcome, text = fut.result()
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


# ---- arguments by reference -------------------------------------------------------------


@record(frozen=True)
class Packed:
    """A task's arguments pickled, with arrays that lie in store blobs as references."""

    data: bytes
    references: int = 0


def _mapping_of(arr: Any) -> Optional[MappedBlob]:
    base = arr
    for _ in range(64):
        if isinstance(base, MappedBlob):
            return base
        if isinstance(base, memoryview):
            base = base.obj
        else:
            nxt = getattr(base, "base", None)
            if nxt is None:
                return None
            base = nxt
    return None


class _RefPickler(pickle.Pickler):
    count = 0

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t.__module__ != "numpy" or t.__name__ != "ndarray":
            return NotImplemented
        if obj.nbytes < BY_REFERENCE_MIN:
            return NotImplemented
        mm = _mapping_of(obj)
        if mm is None or not mm.path:
            return NotImplemented
        start = buffer_address(memoryview(mm))  # numpy is loaded: obj is an array
        assert start is not None
        offset = int(obj.__array_interface__["data"][0]) - start
        if not 0 <= offset < len(mm):
            return NotImplemented
        self.count += 1
        return (map_array, (mm.path, offset, obj.dtype, obj.shape, obj.strides))


def pack_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Packed:
    """``(args, kwargs)`` pickled for a worker: each array of a mapped store blob as where
    it lies (read by ``map_array`` on the worker), everything else by value."""
    f = io.BytesIO()
    p = _RefPickler(f, protocol=5)
    p.dump((args, kwargs))
    return Packed(f.getvalue(), p.count)


def map_array(path: str, offset: int, dtype: Any, shape: Tuple[int, ...],
              strides: Tuple[int, ...]) -> Any:
    """Worker side: the array at ``offset`` of store blob ``path``, in a private
    copy-on-write mapping (a step that writes into it changes no other copy)."""
    import numpy as np

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the Dask worker cannot see the zenbuild store blob {path}: workers need the "
            "project's store at the same path (a shared filesystem), as for File inputs"
        ) from None
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    return np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset, strides=strides)


def run_packed(name: str, ref: FnRef, root: str, packed: Packed,
               trace: Optional[TraceOptions]) -> Any:
    """Worker side: unpack the arguments (mapping referenced arrays) and run the step."""
    args, kwargs = pickle.loads(packed.data)
    return run_ref(name, ref, root, args, kwargs, "py", trace)
