"""The canonical pickle (protocol 5): a reducer_override Pickler that removes per-process
details (set order, tensor storage addresses, OmegaConf resolver caches), and, for the
stability check that ``buffers.encode_value`` makes (pickle twice, compare), locate_unstable,
which names where in the value the change is."""

from __future__ import annotations

import io
import pickle
import sys
from types import FunctionType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from zenbuild.serialize import Unencodable, canonical
from zenbuild.serialize.materialize import LAZY, register_lazy

PROTOCOL = 5


def _set_key(x: Any) -> bytes:
    """How set elements are ordered: by canonical encoding, else by canonical pickle."""
    try:
        return b"c" + canonical(x)
    except Unencodable:
        return b"p" + canonical_pickle(x)


_SET_TAGS = {set: "zenbuild.set", frozenset: "zenbuild.frozenset"}


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 2:
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


def _registered(t: type) -> Optional[Callable[[Any], Any]]:
    if not REDUCERS:
        return None
    for base in t.__mro__:
        fn = REDUCERS.get(base)
        if fn is not None:
            return fn
    return None


class _Pickler(pickle.Pickler):
    # The C pickler never offers built-in containers to reducer_override (nor to a dispatch
    # table), but it asks persistent_id about every object: a set or frozenset is written as
    # a persistent id holding its elements in canonical order, read back by _Unpickler.
    # ``refs``, when a list, collects the classes and functions the pickle names (it asks
    # reducer_override about each before writing it as a global): the code that will run on
    # the value when it is loaded.
    refs: Optional[List[Any]] = None

    def dump(self, obj: Any) -> None:
        if LAZY:  # types registered once their library is imported (serialize.materialize)
            register_lazy()
        super().dump(obj)

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t is set or t is frozenset:
            return (_SET_TAGS[t], tuple(sorted(obj, key=_set_key)) if len(obj) > 1 else tuple(obj))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if self.refs is not None and isinstance(obj, (type, FunctionType)):
            self.refs.append(obj)
        if isinstance(obj, (set, frozenset)):
            return _sorted_set_reduce(obj) if len(obj) > 1 else NotImplemented
        custom = _registered(type(obj)) if not isinstance(obj, type) else None
        if custom is not None:
            return custom(obj)
        mod = type(obj).__module__
        if mod.startswith("torch") and "torch" in sys.modules:
            rv = _torch_reduce(obj)
            if rv is not None:
                return rv
        elif mod == "omegaconf.base" and type(obj).__qualname__ in ("Metadata", "ContainerMetadata"):
            return _omegaconf_metadata_reduce(obj)
        return NotImplemented


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
    refer to it)."""
    import torch

    dt = getattr(torch, dtype)
    buf = data if isinstance(data, bytearray) else bytearray(data)
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
