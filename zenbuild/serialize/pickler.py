"""The canonical pickle (protocol 5): a reducer_override Pickler that removes per-process
details (set order, tensor storage addresses, OmegaConf resolver caches, pandas' lazily
filled ``_cache`` dicts, which strings are the same object), and, for the stability check
that ``buffers.encode_value`` makes (pickle twice, compare), locate_unstable, which names
where in the value the change is.

Strings and bytes. pickle memoizes by identity: a str that is the same object as one
written before is written as a memo reference, an equal str that is another object is
written again in full. Which strings are one object differs between processes (interning:
a dict key equal to a module name, a field value equal to an attribute name, or strings
that came through a pipe to a worker), so the canonical pickle writes every str and bytes
by value: its first occurrence in full (memoized as usual), every later equal one, the same
object or not, as a memo reference to that first one followed by BINPERSID (the C pickler
consults persistent_id before its memo, so both kinds of repeat reach it; _Unpickler gives
the string back). Equal strings load as one object. Only str and bytes are treated so: ints
and floats are never memoized by pickle, and for other immutable types equality does not
mean the same pickle (Decimal("1.0") == Decimal("1.00"), 0.0 == -0.0 in a complex, a
datetime in two time zones). Mutable objects (lists, dicts, instances) keep their identity:
shared stays shared, and recursion works.

numpy dtypes are written by value too, as a persistent id holding their ``str``: which arrays
share one dtype object is not kept by a trip through a pipe (a dtype is unpickled as a new
object, and pandas 2 makes some again with np.dtype(...) when it loads a column), so the same
frame pickled in a worker and in the main process differed. Only dtypes their ``str`` says
everything of (no fields, subarray or metadata); the others keep pickle's own way.

numpy arrays and scalars whose dtype holds padding (serialize.padding_mask: an aligned
structured dtype, x86's np.longdouble) are written with their padding bytes zeroed: they
hold whatever the memory held, another garbage in every process (_padded_reduce)."""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
from types import FunctionType
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import xxhash

from zenbuild.serialize import Unencodable, canonical, own_reducer, padding_mask
from zenbuild.serialize.materialize import LAZY, register_lazy

PROTOCOL = 5


def _set_key(x: Any) -> bytes:
    """How set elements are ordered: by canonical encoding, else by canonical pickle."""
    try:
        return b"c" + canonical(x)
    except Unencodable:
        return b"p" + canonical_pickle(x)


_SET_TAGS = {set: "zenbuild.set", frozenset: "zenbuild.frozenset"}

# numpy's dtype classes (Float64DType, ObjectDType...; only numpy.dtype before numpy 1.25),
# added at the first dump once numpy is imported: their instances are written by value
_DTYPE_TYPES: Set[type] = set()
_numpy_noted = [False]


def _note_numpy() -> None:
    np = sys.modules.get("numpy")
    if np is None:
        return
    for code in "?bhilqBHILQefdgFDGOSUVMm":
        try:
            _DTYPE_TYPES.add(type(np.dtype(code)))
        except TypeError:  # pragma: no cover - a code this numpy does not know
            pass
    _numpy_noted[0] = True


def _dtype_id(obj: Any) -> Any:
    """The persistent id of a numpy dtype its ``str`` fully describes, else None."""
    if obj.fields is None and obj.subdtype is None and not obj.metadata:  # None, or {} after a
        # datetime dtype came through a pickle
        return ("zenbuild.dtype", obj.str)
    return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.persistent_load = _persistent_load  # type: ignore[method-assign]
        super().__init__(*args, **kwargs)

    def persistent_load(self, pid: Any) -> Any:  # only if a Python ignored the attribute
        return _persistent_load(pid)


def _persistent_load(pid: Any) -> Any:
    # a plain function, not a method: the C unpickler calls it faster (once per repeated
    # string of the value, see the module's docstring)
    t = type(pid)
    if t is str or t is bytes:
        return pid
    if t is tuple and len(pid) == 2:
        if pid[0] == "zenbuild.dtype":
            import numpy

            return numpy.dtype(pid[1])
        if pid[0] == "zenbuild.set":
            return set(pid[1])
        if pid[0] == "zenbuild.frozenset":
            return frozenset(pid[1])
    raise pickle.UnpicklingError(f"unknown persistent id {pid!r} in a zenbuild value")


def canonical_unpickle(data: bytes) -> Any:
    """Load a canonical pickle."""
    return _Unpickler(io.BytesIO(data)).load()


def _sorted_set_reduce(obj: Any) -> Any:
    t = type(obj)
    if t is set or t is frozenset:
        return (t, (sorted(obj, key=_set_key),))
    rv = obj.__reduce_ex__(PROTOCOL)  # a subclass: (cls, (list(self),), state)
    if (isinstance(rv, tuple) and len(rv) >= 2 and isinstance(rv[1], tuple) and len(rv[1]) == 1
            and isinstance(rv[1][0], list)):
        return (rv[0], (sorted(rv[1][0], key=_set_key),)) + tuple(rv[2:])
    return rv


# Value types the user taught zenbuild to encode (serialize.register_value_type): type ->
# reduce function returning what __reduce__ would, made of stable parts.
REDUCERS: Dict[type, Callable[[Any], Any]] = {}


def _registered(t: type) -> Optional[Tuple[type, Callable[[Any], Any]]]:
    """(the class of ``t``'s MRO a reducer is registered for, that reducer), or None."""
    if not REDUCERS:
        return None
    for base in t.__mro__:
        fn = REDUCERS.get(base)
        if fn is not None:
            return base, fn
    return None


def _not_implemented(obj: Any) -> Any:
    return NotImplemented


class ReducingPickler(pickle.Pickler):
    """A pickler with the canonical pickler's reducers: the project's registered value types
    (register_value_type, @value_type), torch tensors by dtype, shape and bytes, pandas
    objects without their ``_cache``, OmegaConf metadata without resolver caches, pyarrow
    arrays as loaded, masked arrays as their arrays. What it writes loads with plain
    ``pickle.loads``. ``_Pickler`` (the canonical pickle) adds the persistent ids that make
    its bytes the same in every process; a worker's pipe (executors.pipe) needs only these
    reducers, and pickles plain data about as fast as pickle itself. ``project`` False
    leaves the project's own reducers out (see executors.pipe for why)."""

    # ``refs``, when a list, collects the classes and functions the pickle names (it asks
    # reducer_override about each before writing it as a global): the code that will run on
    # the value when it is loaded.
    refs: Optional[List[Any]] = None
    # ``types``, when a dict, collects the classes whose registered reducer (the project's
    # code: register_value_type, @value_type) was consulted for an object of the value: the
    # code that made its bytes, which the stored entry records (discovered.py, "types")
    types: Optional[Dict[type, None]] = None
    # ``padded``, when a dict (a pickle with out-of-band buffers): id of a PickleBuffer of an
    # array whose items hold padding -> (that buffer, its dtype's padding_mask); the
    # buffer_callback stores it with the padding zeroed a piece at a time (buffers._Buffers)
    padded: Optional[Dict[int, Tuple[Any, Any]]] = None
    # False: only zenbuild's own registered reducers (polars, Arrow-backed pandas columns) are
    # used, a project's (register_value_type, @value_type) are not (executors.pipe)
    project = True

    def dump(self, obj: Any) -> None:
        if LAZY:  # types registered once their library is imported (serialize.materialize)
            register_lazy()
        super().dump(obj)

    def reducer_override(self, obj: Any) -> Any:
        if self.refs is not None and isinstance(obj, (type, FunctionType)):
            self.refs.append(obj)
        if isinstance(obj, (set, frozenset)):
            return _sorted_set_reduce(obj) if len(obj) > 1 else NotImplemented
        t = type(obj)
        if isinstance(obj, type):
            return NotImplemented
        custom = _registered(t)
        rv: Any = NotImplemented
        if custom is not None:
            on, fn = custom
            if self.project:
                if self.types is not None and not own_reducer(fn):
                    self.types[on] = None  # consulted: NotImplemented is a decision of its code
            elif not own_reducer(fn):
                fn = _not_implemented
            rv = fn(obj)
        pandas = _PANDAS.get(t)
        if pandas is None:
            pandas = _is_pandas(t)
        if pandas:
            return _without_pandas_cache(obj, rv)
        if rv is not NotImplemented:
            return rv
        mod = t.__module__
        if mod.startswith("torch") and "torch" in sys.modules:
            rv = _torch_reduce(obj)
            if rv is not None:
                return rv
        elif mod == "omegaconf.base" and t.__qualname__ in ("Metadata", "ContainerMetadata"):
            return _omegaconf_metadata_reduce(obj)
        elif mod == "pyarrow.lib" and "pyarrow" in sys.modules:
            rv = _arrow_array_reduce(obj)
            if rv is not None:
                return rv
        elif mod in ("numpy.ma", "numpy.ma.core") and t.__qualname__ == "MaskedArray":
            rv = _masked_reduce(obj)
            if rv is not None:
                return rv
        numpy = _NUMPY.get(t)
        if numpy is None:
            numpy = _is_numpy(t)
        if numpy:
            keep = padding_mask(obj.dtype)
            if keep is not None:
                return _padded_reduce(obj, keep, self.padded)
        return NotImplemented


class _Pickler(ReducingPickler):
    # The C pickler never offers built-in containers to reducer_override (nor to a dispatch
    # table), but it asks persistent_id about every object: a set or frozenset is written as
    # a persistent id holding its elements in canonical order, read back by _Unpickler.
    # A str or bytes is written by value (see the module's docstring): persistent_id keeps
    # each one written so far, mapped to the object written (the one in the memo).

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        strs: Dict[str, str] = {}
        known: Dict[Any, bytes] = {}
        big: Dict[int, Tuple[bytes, Any]] = {}  # id -> (bytes, key) of the big ones
        self._written = (strs, known, big)
        dtypes = _DTYPE_TYPES

        # a closure, not a method: the pickler calls it for every object it writes
        def persistent_id(obj: Any) -> Any:
            t = type(obj)
            if t is str:
                first = strs.get(obj)
                if first is None:
                    strs[obj] = obj
                return first  # None the first time: the pickler writes it and memoizes it
            if t is int or t is tuple or t is float or t is dict or t is list:
                return None  # the most common, told in the fewest steps
            if t is bytes:
                return _bytes_id(obj, known, big)
            if t is set or t is frozenset:
                return (_SET_TAGS[t],
                        tuple(sorted(obj, key=_set_key)) if len(obj) > 1 else tuple(obj))
            if t in dtypes:
                return _dtype_id(obj)
            return None

        # set before __init__, which looks it up (an attribute, not a method, so that the C
        # pickler calls it without binding it every time)
        self.persistent_id = persistent_id  # type: ignore[method-assign]
        super().__init__(*args, **kwargs)

    def persistent_id(self, obj: Any) -> Any:  # only if a Python ignored the attribute
        return self.__dict__["persistent_id"](obj)

    def clear_memo(self) -> None:
        super().clear_memo()
        for d in self._written:
            d.clear()

    def dump(self, obj: Any) -> None:
        if not _numpy_noted[0]:
            _note_numpy()
        super().dump(obj)


# bytes longer than this are looked up by their length and xxh3 digest, not by themselves
_BIG_BYTES = 1024


def _bytes_id(obj: bytes, known: Dict[Any, bytes], big: Dict[int, Tuple[bytes, Any]]) -> Any:
    """The persistent id of a bytes object: None the first time such bytes are written, then
    the object written that first time (see the module's docstring)."""
    key: Any = obj
    if len(obj) > _BIG_BYTES:  # keyed by digest: no siphash pass over a big payload
        seen = big.get(id(obj))
        if seen is None:
            key = (len(obj), xxhash.xxh3_128_digest(obj))
            big[id(obj)] = (obj, key)  # holds obj, so its id is not reused meanwhile
        else:
            key = seen[1]
    first = known.get(key)
    if first is None:
        known[key] = obj
    return first


def canonical_pickle(value: Any) -> bytes:
    """One canonical pickle of ``value`` (no stability check; ``buffers.encode_value`` makes
    the stored one, checked)."""
    f = io.BytesIO()
    _Pickler(f, protocol=PROTOCOL).dump(value)
    return f.getvalue()


# ---- where is the unstable part ---------------------------------------------------------


def _children(obj: Any) -> Iterator[Tuple[str, Any]]:
    t = type(obj)
    if t is list or t is tuple:
        for i, x in enumerate(obj):
            yield f"[{i}]", x
        return
    if t is dict:
        for k, x in obj.items():
            yield f"[{k!r}]", x
        return
    if isinstance(obj, (set, frozenset)):
        return
    try:
        rv = obj.__reduce_ex__(PROTOCOL)
    except Exception:
        return
    if not isinstance(rv, tuple):
        return
    states: List[Any] = [rv[2]] if len(rv) > 2 else []
    if states and isinstance(states[0], tuple) and len(states[0]) == 2:  # (dict, slots)
        states = list(states[0])
    for state in states:
        if isinstance(state, dict):
            for k, x in state.items():
                yield f".{k}", x
    if len(rv) > 1 and isinstance(rv[1], tuple):
        for i, x in enumerate(rv[1]):
            if not isinstance(x, type):
                yield f"<argument {i} of its reduce>", x
    for name, items in (("item", rv[3] if len(rv) > 3 else None), ("entry", rv[4] if len(rv) > 4 else None)):
        if items is not None:
            for i, x in enumerate(items):
                yield f"<{name} {i}>", x


def _differs(v: Any) -> bool:
    try:
        return canonical_pickle(v) != canonical_pickle(v)
    except Exception:
        return False


def locate_unstable(value: Any, depth: int = 0) -> Tuple[str, Any]:
    """(path, part): the innermost part of ``value`` whose two pickles differ (path "" when
    it is the value itself). Only run after a mismatch, so its cost does not matter."""
    if depth < 30:
        for where, child in _children(value):
            if child is not value and _differs(child):
                inner, part = locate_unstable(child, depth + 1)
                return where + inner, part
    return "", value


# ---- numpy padding ---------------------------------------------------------------------
# An np.longdouble (x86: 10 bytes of value in 16) or an aligned structured dtype holds
# padding bytes in each item, left with whatever the memory held: numpy pickles them with
# the rest, so the same value had another digest in every process. The canonical pickle
# writes them as zeros (serialize.padding_mask). Arrays and scalars of other dtypes keep
# numpy's own pickle, byte for byte.

_NUMPY: Dict[type, bool] = {}  # type -> whether it is an ndarray or numpy scalar (sub)class


def _is_numpy(t: type) -> bool:
    np = sys.modules.get("numpy")
    found = np is not None and issubclass(t, (np.ndarray, np.generic))
    if len(_NUMPY) > 10_000:
        _NUMPY.clear()
    _NUMPY[t] = found
    return found


def _padded_reduce(obj: Any, keep: Any, padded: Optional[Dict[int, Tuple[Any, Any]]]) -> Any:
    """The reduce of a numpy array or scalar whose dtype holds padding, with the padding
    zeroed. A plain contiguous array in a pickle with out-of-band buffers (``padded`` a dict)
    keeps numpy's reduce, its buffer noted in ``padded`` (zeroed as it is stored, a piece at
    a time: no copy of the array); any other array is reduced as a copy of itself with the
    padding zeroed, as numpy would reduce it."""
    import numpy as np

    if isinstance(obj, np.generic):
        rv = obj.__reduce__()
        if (type(rv) is tuple and len(rv) == 2 and type(rv[1]) is tuple and len(rv[1]) == 2
                and type(rv[1][1]) is bytes and len(rv[1][1]) == keep.size):
            raw = (np.frombuffer(rv[1][1], dtype=np.uint8) & keep).tobytes()
            return (rv[0], (rv[1][0], raw))
        return NotImplemented  # pragma: no cover - a layout this numpy does not use
    if padded is not None and type(obj) is np.ndarray and obj.size:
        rv = obj.__reduce_ex__(PROTOCOL)
        if (type(rv) is tuple and len(rv) == 2 and type(rv[1]) is tuple and rv[1]
                and type(rv[1][0]) is pickle.PickleBuffer):
            padded[id(rv[1][0])] = (rv[1][0], keep)
            return rv
    copy = obj.copy(order="C")  # (a subclass stays one, with its attributes)
    if copy.size:
        flat = np.ndarray.reshape(copy.view(np.ndarray), -1).view(np.uint8).reshape(-1, keep.size)
        flat &= keep
    return copy.__reduce_ex__(PROTOCOL)


# ---- numpy masked arrays -----------------------------------------------------------------


def _masked_reduce(obj: Any) -> Optional[Tuple[Any, ...]]:
    """A masked array as its data and mask arrays (kept out of band, so a load maps them),
    its fill value and hard-mask flag. numpy's own pickle holds both as bytes copies (a
    load cost three times the array). Only a plain-ndarray-based one; others keep numpy's."""
    import numpy as np

    if obj._baseclass is not np.ndarray or type(obj.data) is not np.ndarray:
        return None
    mask = obj._mask
    fill = obj._fill_value
    return (masked_from_arrays, (_c_order(obj.data),
                                 None if mask is np.ma.nomask else _c_order(mask),
                                 None if fill is None else fill.item() if fill.ndim == 0 and
                                 fill.dtype.names is None else fill,
                                 bool(obj._hardmask)))


def _c_order(a: Any) -> Any:
    """``a`` itself when C-contiguous, else a C-ordered copy; its shape kept (a 0-d array
    stays 0-d: np.ascontiguousarray makes it (1,), and a masked scalar came back 1-d)."""
    import numpy as np

    return a if a.flags.c_contiguous else np.array(a, order="C")


def masked_from_arrays(data: Any, mask: Any, fill_value: Any, hard_mask: bool) -> Any:
    """Rebuild a masked array stored by the canonical pickler (a stable name: stored pickles
    refer to it); ``data`` and ``mask`` are used as they come (mapped: no copy)."""
    import numpy as np

    out: Any = np.ma.MaskedArray(data, copy=False)  # (no mask given: nomask)
    if mask is not None:
        out._mask = mask
        out._sharedmask = False
    out._hardmask = hard_mask
    if fill_value is not None:
        out.fill_value = fill_value
    return out


# ---- torch --------------------------------------------------------------------------------


def _torch_reduce(obj: Any) -> Optional[Tuple[Any, ...]]:
    """A plain tensor or Parameter as (dtype, shape, contiguous bytes): torch's own pickle
    carries its storage's key (an address). Sparse, quantized, meta and tensors with
    Python attributes keep torch's pickle (and the stability check)."""
    import torch

    t = type(obj)
    param = t is torch.nn.Parameter
    if not (t is torch.Tensor or param):
        return None
    if (obj.layout != torch.strided or obj.is_quantized or obj.device.type == "meta"
            or getattr(obj, "__dict__", None)):
        return None
    x = obj.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    x = x.resolve_conj().resolve_neg().contiguous()
    data: Any = b""
    if x.numel():
        raw = x.reshape(-1).view(torch.uint8)
        data = pickle.PickleBuffer(raw.numpy()) if "numpy" in sys.modules else bytes(raw.tolist())
    args = (str(obj.dtype).replace("torch.", ""), tuple(obj.shape), data, bool(obj.requires_grad),
            str(obj.device))
    return (parameter_from_bytes if param else tensor_from_bytes, args)


def tensor_from_bytes(dtype: str, shape: Tuple[int, ...], data: Any, requires_grad: bool,
                      device: str) -> Any:
    """Rebuild a tensor stored by the canonical pickler (a stable name: stored pickles
    refer to it). A writable out-of-band buffer (a view of the blob mapped copy-on-write) is
    used in place: loading costs no copy, and a step writing into the tensor changes only
    its own pages. Read-only bytes (an in-band pickle) are copied."""
    import torch

    dt = getattr(torch, dtype)
    buf: Any = data
    if not isinstance(data, bytearray):
        try:
            view = memoryview(data)
        except TypeError:
            view = None
        if view is not None and not view.readonly and view.c_contiguous:
            buf = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        else:
            buf = bytearray(data)
    t = torch.frombuffer(buf, dtype=dt) if len(buf) else torch.empty(0, dtype=dt)
    t = t.reshape(shape)
    if device != "cpu":
        t = t.to(device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def parameter_from_bytes(dtype: str, shape: Tuple[int, ...], data: Any, requires_grad: bool,
                         device: str) -> Any:
    """Rebuild an nn.Parameter stored by the canonical pickler (a stable name)."""
    import torch

    return torch.nn.Parameter(tensor_from_bytes(dtype, shape, data, False, device), requires_grad)


# ---- OmegaConf ---------------------------------------------------------------------------


def _omegaconf_metadata_reduce(obj: Any) -> Any:
    """An OmegaConf node's metadata without its resolver cache: a Hydra config caches the
    ``${now:...}`` it resolved (the time of day), which is not part of its content."""
    rv = obj.__reduce_ex__(PROTOCOL)
    if isinstance(rv, tuple) and len(rv) > 2 and isinstance(rv[2], dict) and rv[2].get("resolver_cache"):
        from collections import defaultdict

        state = dict(rv[2])
        state["resolver_cache"] = defaultdict(dict)
        return (rv[0], rv[1], state) + tuple(rv[3:])
    return NotImplemented


# ---- pandas --------------------------------------------------------------------------------
# pandas' cache_readonly keeps what it computed in the object's ``_cache`` dict, created at
# the first use: an ExtensionDtype's index_class, a datetime or period array's _creso... So
# the pickled state of a dtype or array depends on what the process did with it (or with
# the shared dtype instance) before: an Int64 column's dtype pickled with {'index_class':
# Index} in one process and without it in another. The canonical pickle leaves ``_cache``
# out of the state of every object of a pandas class (or a subclass of one), as pandas'
# own ArrowExtensionArray.__getstate__ does (its cache_readonly makes a new one when
# needed), and writes the state the object would have had had the cache never been made.

_PANDAS: Dict[type, bool] = {}  # type -> whether it is or derives from a pandas class


def _is_pandas(t: type) -> bool:
    found = False
    if "pandas" in sys.modules:  # else no class derives from one (a class's bases are fixed)
        for base in t.__mro__:
            mod = getattr(base, "__module__", None) or ""
            if mod == "pandas" or mod.startswith("pandas."):
                found = True
                break
    if len(_PANDAS) > 10_000:  # classes made on the fly: do not keep them all alive
        _PANDAS.clear()
    _PANDAS[t] = found
    return found


_PANDAS_MAJOR: List[int] = []


def _pandas_major() -> int:
    if not _PANDAS_MAJOR:
        try:
            _PANDAS_MAJOR.append(int(sys.modules["pandas"].__version__.split(".")[0]))
        except (KeyError, AttributeError, ValueError):
            _PANDAS_MAJOR.append(0)
    return _PANDAS_MAJOR[0]


def _without_cache(d: Any, own: bool) -> Any:
    """``d`` without its "_cache" entry (``d`` itself when it has none); None for a dict
    left empty that is the object's own __dict__ (``own``), as object.__reduce_ex__ gives
    for an object without attributes."""
    if type(d) is not dict or "_cache" not in d:
        return d
    out = dict(d)
    del out["_cache"]
    return None if own and not out else out


def _without_pandas_cache(obj: Any, rv: Any) -> Any:
    """The reduce of a pandas object without its ``_cache``: ``rv``, what a registered
    reducer gave (NotImplemented: none did, so the object's own reduce)."""
    if rv is NotImplemented:
        reduce = copyreg.dispatch_table.get(type(obj))
        rv = reduce(obj) if reduce is not None else obj.__reduce_ex__(PROTOCOL)
    if not isinstance(rv, tuple) or len(rv) < 3:
        return rv  # no state (or a global's name, which the pickler saves as such)
    state = rv[2]
    own_dict = getattr(obj, "__dict__", None)
    if type(state) is dict:
        new = _without_cache(state, state is own_dict)
    elif type(state) is tuple and any(type(x) is dict and "_cache" in x for x in state):
        items = [_without_cache(x, False) for x in state]
        if (own_dict is not None and state[-1] is own_dict and items[-1] == {}
                and getattr(rv[0], "__name__", "").startswith("__pyx_unpickle")
                and _pandas_major() >= 3):
            # Cython's pickle of a cdef class puts the instance's __dict__ last in the state
            # only when the instance has one (a datetime array's, made by its first cache);
            # pandas 2's NDArrayBacked always has one (its __setstate__ wants all three)
            items.pop()
        elif (len(state) == 2 and own_dict is not None and state[0] is own_dict
                and items[0] == {} and type(state[1]) is dict):
            items[0] = None  # (__dict__, slots) of object.__reduce_ex__: None when empty
        new = tuple(items)
    else:
        return rv
    return rv if new is state else rv[:2] + (new,) + rv[3:]


# ---- pyarrow -------------------------------------------------------------------------------


def _arrow_array_reduce(obj: Any) -> Any:
    """A pyarrow Array's reduce with its ArrayData as the load makes it (None when ``obj``
    is no Array): pyarrow pickles an array's validity bitmap even when it has no nulls and
    drops it when loading (ArrayData::Make), so a column pandas made with an all-valid
    bitmap (a MultiIndex level, a Categorical's categories) would digest differently from
    its own copy in another process (a -j worker's value comes back through a pipe)."""
    import pyarrow as pa

    if not isinstance(obj, pa.Array):
        return None
    obj = _compacted(obj, pa)
    rv = obj.__reduce__()
    if not (isinstance(rv, tuple) and len(rv) == 2 and type(rv[1]) is tuple
            and len(rv[1]) == 1 and getattr(rv[0], "__name__", "") == "_restore_array"):
        return None
    data = _as_loaded(rv[1][0])
    return rv if data is rv[1][0] else (rv[0], (data,))


def _compacted(arr: Any, pa: Any) -> Any:
    """``arr`` in buffers of its own when it is a slice of a bigger array: pyarrow pickles a
    slice with its parent's whole buffers (ten rows of a 10M-row table were an 80 MB value),
    and two equal slices of different parents with different bytes (two digests). A slice
    that keeps most of its parent is left as it is."""
    try:  # (a few bytes more are a builder's padding, not a parent: kept as they are, as
        # copying would hand the stability check new buffers at every pickle)
        if arr.get_total_buffer_size() <= 2 * arr.nbytes + 4096:
            return arr
        return pa.concat_arrays([arr])  # (a copy of only the rows it holds, at offset 0)
    except Exception:  # noqa: BLE001 - a type concatenation does not support: as it is
        return arr


def _no(_: Any) -> bool:
    return False


def _as_loaded(data: Any) -> Any:
    """pyarrow's pickled ArrayData ``(type, length, null_count, offset, buffers, children,
    dictionary)`` adjusted as arrow::ArrayData::Make adjusts it when the pickle is loaded:
    no validity bitmap when there are no nulls (and 0 nulls when there is no bitmap); a
    null-typed array is all nulls; a union or run-end-encoded array has no nulls of its own.
    ``data`` itself when nothing changes (and for a shape this does not know)."""
    if type(data) is not tuple or len(data) != 7 or type(data[4]) is not list:
        return data
    import pyarrow as pa

    typ, length, nulls, offset, buffers, children, dictionary = data
    changed = False
    if type(children) is list and children:
        kids = [_as_loaded(c) for c in children]
        if any(a is not b for a, b in zip(kids, children)):
            children, changed = kids, True
    if type(dictionary) is tuple:
        d = _as_loaded(dictionary)
        if d is not dictionary:
            dictionary, changed = d, True
    if buffers:
        if pa.types.is_null(typ):
            if nulls != length or buffers[0] is not None:
                nulls, buffers, changed = length, [None, *buffers[1:]], True
        elif pa.types.is_union(typ) or getattr(pa.types, "is_run_end_encoded", _no)(typ):
            if nulls != 0:
                nulls, changed = 0, True
        else:
            if nulls == -1 and buffers[0] is not None:  # not counted yet: count them
                valid = pa.Array.from_buffers(pa.bool_(), length, [None, buffers[0]],
                                              offset=offset)
                nulls, changed = length - valid.true_count, True
            if nulls == 0 and buffers[0] is not None:
                buffers, changed = [None, *buffers[1:]], True
            elif nulls == -1 and buffers[0] is None:
                nulls, changed = 0, True
    if not changed:
        return data
    return (typ, length, nulls, offset, buffers, children, dictionary)
