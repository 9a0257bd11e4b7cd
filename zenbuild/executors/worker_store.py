"""Large values between the main process and workers (Dask, -j) go through the store, never
through the pipe: a worker writes its step's large value into the store itself and sends
back a StoredValue, which the main process adopts (a 400 MiB array through the Dask client
cost seconds and twice its size in the client's memory); arrays of store blobs go to a
worker as where they lie (``pack_args``), mapped there copy-on-write (issue 13). Everything
else crosses the pipe pickled with the store's reducers (executors.pipe), so a value the
store can write can be sent: a large ``@value_type`` argument goes by value, its files'
bytes in the pickle."""

from __future__ import annotations

import mmap
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from zenbuild.executors import Outcome, Task
from zenbuild.records import record
from zenbuild.serialize.buffers import encode_value
from zenbuild.store.blobs import MappedBlob, StoredValue, write_parts

# A value whose encoding is at least this big is written by the worker; a smaller one comes
# back by value (the main process keeps values up to serialize.buffers.INLINE_KEEP in memory).
WORKER_STORE_MIN = 1 << 20
MARKER_TOUCH_S = 60.0  # the run's marker is kept fresh this often (cache gc's grace is an hour)


@record(frozen=True)
class StoreTarget:
    """Where a worker may write values: the store's cas/ and tmp/ folders, and ``marker``, a
    file the main process made in tmp/ for this run. A worker that does not see the marker
    sees another store, or none (a cluster without the shared filesystem), and sends its
    value back instead."""

    cas: str
    tmp: str
    marker: str
    min_size: int = WORKER_STORE_MIN


def make_target(store_path: str) -> StoreTarget:
    """A new marker in STORE/tmp (named PID-..., so a killed run's is swept with its temp
    files); ``drop_target`` removes it."""
    tmp = os.path.join(store_path, "tmp")
    marker = os.path.join(tmp, f"{os.getpid()}-run-{os.urandom(8).hex()}")
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    return StoreTarget(os.path.join(store_path, "cas"), tmp, marker)


def drop_target(target: Optional[StoreTarget]) -> None:
    if target is not None:
        try:
            os.unlink(target.marker)
        except FileNotFoundError:
            pass


def store_value(value: Any, target: Optional[StoreTarget], root: Optional[str] = None) -> Any:
    """Worker side: ``value`` written into the store as the main process would write it (the
    same encoding, so the same digest), returned as a StoredValue; or ``value`` itself when it
    is small, cannot be encoded (the main process then reports why, as for any executor), the
    store is not visible here, or the write fails (a full disk is then reported by the main
    process's own attempt).

    A value whose pickle names project classes or functions carries their code digests, which
    this worker computes with a fingerprinter of its own over project ``root``: each named
    object comes back in ``refs`` with the digest used (None: not project code here), and the
    main process adopts the blob only when its own digests agree (else it encodes the value
    again itself, as it did for every such value before). ``root`` None: no digests."""
    if target is None or value is None or not os.path.exists(target.marker):
        return value
    named: List[Any] = []

    def note(obj: Any) -> None:  # every class and function the pickle names
        named.append(obj)

    try:  # first without code digests: a small value goes back as it is, and only a big one
        enc = encode_value(value, code_of=note)  # naming project code pays for digesting it
    except Exception:  # noqa: BLE001 - the main process encodes it again and says why
        return value
    if enc.size < target.min_size:
        return value
    types = tuple((str(c.__module__), str(c.__qualname__)) for c in enc.types)
    # the classes whose registered code encoded it: their digests are checked like the others'
    named.extend(c for c in enc.types if all(c is not n for n in named))
    digest_of = _code_digests(root, target)
    got = {id(obj): digest_of(obj) for obj in named}  # id -> (carried, reported)
    refs = sorted({(str(getattr(obj, "__module__", "") or ""),
                    str(getattr(obj, "__qualname__", "") or ""), got[id(obj)][1])
                   for obj in named}, key=_ref_order)
    if any(carried is not None for carried, _ in got.values()):
        try:  # project code among them: their digests go in front of the pickle
            enc = encode_value(value, code_of=lambda obj: (got.get(id(obj)) or (None,))[0])
        except Exception:  # noqa: BLE001 - as above
            return value
    try:
        digest = write_parts(target.cas, target.tmp, enc.parts)
    except OSError:
        return value
    return StoredValue(digest, enc.size, tuple(refs), types)


_UNKNOWN = "?"  # a digest no fingerprinter gives: the main process then encodes the value


def _ref_order(ref: Tuple[str, str, Optional[str]]) -> Tuple[str, str, str]:
    return ref[0], ref[1], ref[2] or ""


def _code_digests(root: Optional[str], target: StoreTarget
                  ) -> Callable[[Any], Tuple[Optional[str], Optional[str]]]:
    """For each object a value's pickle names: (the code digest the value carries, the one
    reported in refs). The digests come from a fingerprinter made for this value, when the
    first object is named (a long-lived worker may have seen other versions of the project's
    files; a new one reads what is on disk now). Without a root, nothing is carried and None
    reported (the main process encodes a value naming project code itself); an object the
    fingerprinter fails on carries nothing and reports _UNKNOWN, which never agrees."""
    made: List[Any] = []

    def digest_of(obj: Any) -> Tuple[Optional[str], Optional[str]]:
        if root is None:
            return None, None
        try:
            if not made:
                from zenbuild.fingerprint.code import CodeFingerprinter

                made.append(CodeFingerprinter(root, True, os.path.dirname(target.cas)))
            d = made[0].value_code(obj)
        except Exception:  # noqa: BLE001 - the main process encodes the value instead
            return None, _UNKNOWN
        return d, d

    return digest_of


# ---- arguments by reference -------------------------------------------------------------

# An array at least this big, lying in a mapped store blob, is sent by reference.
BY_REFERENCE_MIN = 1 << 20


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


def map_tensor(path: str, offset: int, dtype: str, shape: Tuple[int, ...]) -> Any:
    """Worker side: the tensor at ``offset`` of store blob ``path``, on a private
    copy-on-write mapping (as map_array)."""
    import torch

    dt = getattr(torch, dtype)
    count = 1
    for n in shape:
        count *= n
    mm = _map_copy(path)
    return torch.frombuffer(mm, dtype=dt, count=count, offset=offset).reshape(shape)


def _map_copy(path: str) -> mmap.mmap:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the Dask worker cannot see the zenbuild store blob {path}: workers need the "
            "project's store at the same path (a shared filesystem), as for File inputs"
        ) from None
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)


def pack_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Packed:
    """``(args, kwargs)`` pickled for a worker with the store's reducers (executors.pipe:
    registered value types, tensors of every dtype), each array or tensor of a mapped store
    blob as where it lies (read by ``map_array``, ``map_tensor`` on the worker), everything
    else by value."""
    from zenbuild.executors import pipe

    data, references = pipe.pack(args, kwargs)
    return Packed(data, references)


def map_array(path: str, offset: int, dtype: Any, shape: Tuple[int, ...],
              strides: Tuple[int, ...]) -> Any:
    """Worker side: the array at ``offset`` of store blob ``path``, in a private
    copy-on-write mapping (a step that writes into it changes no other copy)."""
    import numpy as np

    return np.ndarray(shape, dtype=dtype, buffer=_map_copy(path), offset=offset,
                      strides=strides)


class Sending:
    """An executor's side of sending tasks to workers that store large values themselves: the
    run's marker (``target``, made at the first task, removed by ``close``) and the packing of
    each task's arguments."""

    def __init__(self, store_path: Optional[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store_path = store_path
        self.target: Optional[StoreTarget] = None
        self.clock = clock
        self._touched = 0.0

    def pack(self, task: Task) -> Union[Packed, Outcome]:
        """The task's arguments for a worker (``pack_args``), or the failed Outcome of a task
        whose arguments cannot be pickled (the step fails, the run goes on)."""
        if self.store_path is not None:
            self._keep_marker()
        try:
            return pack_args(tuple(task.args), dict(task.kwargs))
        except Exception as e:  # noqa: BLE001
            return Outcome(task.name, False, error=(
                f"step {task.name}: its arguments cannot be sent to a worker process: "
                f"{type(e).__name__}: {e}. Pass picklable values, or run with -j 1.\n"))

    def _keep_marker(self) -> None:
        """Make the run's marker, or keep it: ``cache gc`` sweeps STORE/tmp files not modified
        for an hour, which would take a long run's marker (a watch session's executor lives
        as long as it does), and the workers would then send their values back through the
        pipe. So it is touched at most once a minute, and made again if it is gone."""
        assert self.store_path is not None
        now = self.clock()
        if self.target is None:
            self.target = make_target(self.store_path)
        elif now - self._touched >= MARKER_TOUCH_S:
            try:
                os.utime(self.target.marker)
            except FileNotFoundError:
                os.close(os.open(self.target.marker, os.O_WRONLY | os.O_CREAT, 0o644))
        else:
            return
        self._touched = now

    def close(self) -> None:
        drop_target(self.target)
        self.target = None


def unpack_args(packed: Packed) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Worker side: the arguments of ``pack_args``, referenced arrays mapped."""
    from zenbuild.executors import pipe

    args, kwargs = pipe.loads(packed.data)
    return args, kwargs
