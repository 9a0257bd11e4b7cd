"""Canonical encodings of config objects in fingerprints: dataclasses, Enums, NamedTuples and
pydantic models, as the type's qualified name plus their fields (recursively), under tag o.

Only fingerprints (``canonical()``: dict keys sorted) use them; a step's stored return value
keeps the canonical pickle, which can be loaded back. ``classes_met()`` collects the classes
encoded, so the code of a project class joins the fingerprint (fingerprint/params.py)."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional

_DEPTH_LIMIT = 100
# the classes encoded while a collection is open (fingerprint.params.encode_param)
_MET: contextvars.ContextVar[Optional[Dict[type, None]]] = contextvars.ContextVar(
    "zenbuild_configs_met", default=None)
_active: contextvars.ContextVar[int] = contextvars.ContextVar("zenbuild_configs_depth", default=0)


@contextlib.contextmanager
def classes_met() -> Iterator[List[type]]:
    """Collect, into the list yielded, each config class encoded inside the block (once)."""
    met: Dict[type, None] = {}
    out: List[type] = []
    token = _MET.set(met)
    try:
        yield out
    finally:
        _MET.reset(token)
        out.extend(met)


def kind_of(v: Any) -> Optional[str]:
    """"dataclass", "enum", "namedtuple" or "pydantic" for a config object, else None."""
    t = type(v)
    if isinstance(getattr(t, "__dataclass_fields__", None), dict) and not isinstance(v, type):
        return "dataclass"
    if "enum" in sys.modules:
        import enum

        if isinstance(v, enum.Enum):
            return "enum"
    if isinstance(v, tuple) and isinstance(getattr(t, "_fields", None), tuple):
        return "namedtuple"
    if "pydantic" in sys.modules:
        import pydantic

        if isinstance(v, pydantic.BaseModel):
            return "pydantic"
    return None


def fields_of(v: Any, kind: str) -> Dict[str, Any]:
    """The fields that make up a config object's value."""
    if kind == "enum":
        return {"name": v.name, "value": v.value}
    if kind == "dataclass":
        import dataclasses

        return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if kind == "namedtuple":
        return dict(zip(type(v)._fields, v))
    names = getattr(type(v), "model_fields", None) or getattr(type(v), "__fields__", {})
    out = {name: getattr(v, name) for name in names}
    extra = getattr(v, "model_extra", None)
    if extra:
        out.update({f"extra:{k}": x for k, x in extra.items()})
    return out


def config_encoder(v: Any) -> Optional[Callable[[Any, Any], None]]:
    """The encoder for ``v`` when it is a config object (serialize._extra_encoder's hook)."""
    return _encode if kind_of(v) is not None else None


def _encode(e: Any, v: Any) -> None:
    """Tag o: "kind:module.qualname", then the fields as a dict (keys sorted)."""
    from zenbuild.serialize import Unencodable

    if not e.sort_keys:
        raise Unencodable(v)  # a stored value: the canonical pickle, which loads back
    kind = kind_of(v)
    assert kind is not None
    depth = _active.get()
    if depth > _DEPTH_LIMIT:
        raise Unencodable(v, " (nested too deeply or recursive)")
    t = type(v)
    met = _MET.get()
    if met is not None:
        met[t] = None
    e.blob(b"o", f"{kind}:{t.__module__}.{t.__qualname__}".encode("utf-8", "surrogatepass"))
    token = _active.set(depth + 1)
    try:
        e.enc(fields_of(v, kind))
    finally:
        _active.reset(token)
