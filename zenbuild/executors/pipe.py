"""What crosses the pipe between the main process and a worker (-j, Dask) by value: a step's
arguments on the way out (``pack``), its value on the way back (``dumps``), pickled at
protocol 5 with the reducers of the store's canonical pickler (serialize.pickler's
ReducingPickler), so that every value a serial run can store crosses the pipe too, and what
arrives is what a serial run's consumer would get:

* zenbuild's own reducers always: torch tensors as dtype, shape and bytes (torch's own
  pickle cannot load a uint16, uint32, uint64, float8 or complex32 tensor: plain pickle broke
  the pool, or the step, under -j 2), pandas objects without their caches, pyarrow arrays,
  masked arrays, polars frames. Each gives back the object it was given.
* the project's reducers (``register_value_type``, ``@value_type``: an object that saves
  itself to a folder because it cannot be pickled, a native index or a tokenizer) only when
  the value does not pickle without them. A project reducer need not give back what it was
  given (it is the stored form, and may normalize): a serial run's consumer gets the value
  once through it, as stored, and the main process sends an argument it already holds in
  that form, so a second trip through it on the pipe would give the consumer another value
  than in process, and the producer another digest. An object that cannot travel as itself
  goes as it is stored, which is what a serial run's consumer gets.

Not the canonical pickle itself: its persistent ids (every str and bytes by value, sets
sorted, numpy dtypes by name) make equal values give equal bytes, which a digest needs and a
pipe does not, and they made a small list of dicts 6x slower to pickle than plain pickle;
the main process encodes what it receives canonically anyway.

Large values do not come here: a worker writes its big value into the store itself
(worker_store.store_value), and an array or tensor of 1 MiB or more that lies in a mapped
store blob goes out as where it lies (``map_array``, ``map_tensor``); everything else is
written in band.

Imported when the first task is sent: a run served from the cache never loads the pickler.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Dict, Tuple, TypeVar

from zenbuild.executors.worker_store import (
    BY_REFERENCE_MIN,
    _mapping_of,
    map_array,
    map_tensor,
)
from zenbuild.serialize.buffers import buffer_address
from zenbuild.serialize.pickler import PROTOCOL, REDUCERS, ReducingPickler

T = TypeVar("T")


class _RefPickler(ReducingPickler):
    """The store's reducers, with arrays and plain CPU tensors of mapped store blobs as
    references (a cached value's arrays: sent as where they lie, not by value)."""

    count = 0

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        mod = t.__module__
        if mod == "torch" and t.__name__ == "Tensor":
            rv = self._tensor(obj)
            if rv is not None:
                return rv
        elif mod == "numpy" and t.__name__ == "ndarray":
            rv = self._array(obj)
            if rv is not None:
                return rv
        return super().reducer_override(obj)

    def _array(self, obj: Any) -> Any:
        if obj.nbytes < BY_REFERENCE_MIN:
            return None
        mm = _mapping_of(obj)
        if mm is None or not mm.path:
            return None
        start = buffer_address(memoryview(mm))  # numpy is loaded: obj is an array
        assert start is not None
        offset = int(obj.__array_interface__["data"][0]) - start
        if not 0 <= offset < len(mm):
            return None
        self.count += 1
        return (map_array, (mm.path, offset, obj.dtype, obj.shape, obj.strides))

    def _tensor(self, obj: Any) -> Any:
        """A plain CPU tensor lying in a mapped store blob (a cached value: the canonical
        pickle's tensor_from_bytes uses the mapping in place) as where it lies; it was
        pickled by value, a 256 MiB tensor peaking at 1.2 GiB under -j 2."""
        import torch

        if (obj.device.type != "cpu" or obj.layout != torch.strided or obj.is_quantized
                or obj.requires_grad or getattr(obj, "__dict__", None)
                or not obj.is_contiguous()):
            return None
        nbytes = obj.numel() * obj.element_size()
        if nbytes < BY_REFERENCE_MIN:
            return None
        ptr = obj.data_ptr()
        from zenbuild.store import blobs

        for mm in list(blobs.MAPPED or ()):
            if not mm.path or mm.closed:
                continue
            start = buffer_address(memoryview(mm))
            if start is not None and start <= ptr and ptr + nbytes <= start + len(mm):
                self.count += 1
                return (map_tensor, (mm.path, ptr - start, str(obj.dtype).replace("torch.", ""),
                                     tuple(obj.shape)))
        return None


def pack(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[bytes, int]:
    """``(args, kwargs)`` pickled, with references to store blobs; and how many references
    it holds. Raises what pickling them raises."""

    def dump(project: bool) -> Tuple[bytes, int]:
        f = io.BytesIO()
        p = _RefPickler(f, protocol=PROTOCOL)
        p.project = project
        p.dump((args, kwargs))
        return f.getvalue(), p.count

    return _either(dump)


def dumps(value: Any) -> bytes:
    """A step's value for the way back (raises what pickling it raises)."""

    def dump(project: bool) -> bytes:
        f = io.BytesIO()
        p = ReducingPickler(f, protocol=PROTOCOL)
        p.project = project
        p.dump(value)
        return f.getvalue()

    return _either(dump)


def _either(dump: Callable[[bool], T]) -> T:
    """``dump(False)``: without the project's reducers; else, when that raises (something
    in the value does not pickle), ``dump(True)``, with them (see the module's docstring)."""
    if not REDUCERS:
        return dump(False)
    try:
        return dump(False)
    except Exception:  # noqa: BLE001 - whatever pickling raised: try the way the store does
        return dump(True)


def loads(data: bytes) -> Any:
    """``pack``'s or ``dumps``'s bytes loaded (referenced blobs mapped copy-on-write)."""
    return pickle.loads(data)
