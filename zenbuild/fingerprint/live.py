"""Live state the code of a class or a dispatch function stands for, beyond its text: a
project class's attributes as they are now (set from outside the class statement, filled
into a class-level registry, made by a metaclass), and a functools.singledispatch
function's whole registry (the types and the code of each implementation). Encoded with the
ValueEncoder the caller passes, so the rules for values that have no stable encoding are
those of module constants. See docs/fingerprint.md ("Live class state")."""

from __future__ import annotations

import types
from typing import Any, List, Tuple

# descriptors made by the interpreter for __slots__ and C types: nothing of the project's
_SLOTS = (types.MemberDescriptorType, types.GetSetDescriptorType)


def is_singledispatch(value: Any) -> bool:
    """A function made by functools.singledispatch (or anything shaped like one)."""
    return (
        callable(value)
        and callable(getattr(value, "dispatch", None))
        and callable(getattr(value, "register", None))
        and hasattr(getattr(value, "registry", None), "items")
        and getattr(value, "__wrapped__", None) is not None
    )


def dispatch_bytes(fn: Any, enc: Any, d: int) -> bytes:
    """A singledispatch function: what it wraps and, sorted by type, each registered type and
    implementation (a project implementation also by the digest of its code, so two
    implementations sharing a name, `def _`, are told apart). Of a library's dispatcher, only
    the entries with a project type or implementation."""
    parts: List[bytes] = []
    # a library's dispatcher: its own implementations are its package version's, and it may
    # register more lazily (as optional modules load); the project's are what counts
    ours_only = not enc.is_project(fn.__wrapped__)
    for cls, impl in list(fn.registry.items()):
        if ours_only and not (enc.is_project(cls) or enc.is_project(impl)):
            continue
        parts.append(enc.encode(cls, d) + b"=>" + impl_bytes(impl, enc, d))
    return (b"singledispatch(" + enc.encode(fn.__wrapped__, d) + b";"
            + b",".join(sorted(parts)) + b")")


def impl_bytes(impl: Any, enc: Any, d: int) -> bytes:
    out = enc.encode(impl, d)
    own = getattr(enc, "own_digest", None)
    digest = own(impl) if own is not None else None
    return out + (b"@" + digest.encode() if digest else b"")


def _own(cls: type, name: str, fn: Any) -> bool:
    """A function of the class statement itself, bound under its own name: the statement's
    digest already covers it."""
    return (
        isinstance(fn, types.FunctionType)
        and getattr(fn, "__name__", None) == name
        and fn.__qualname__ == f"{cls.__qualname__}.{name}"
        and getattr(fn, "__module__", None) == cls.__module__
    )


def _unwrap(x: Any) -> Tuple[bytes, List[Any]]:
    """(descriptor kind, the callables it holds) for method-like descriptors; ("", [x])
    otherwise."""
    import functools

    if isinstance(x, staticmethod):
        return b"static", [x.__func__]
    if isinstance(x, classmethod):
        return b"class", [x.__func__]
    if isinstance(x, property):
        return b"property", [x.fget, x.fset, x.fdel]
    if isinstance(x, functools.cached_property):
        return b"cached_property", [x.func]
    return b"", [x]


def class_attributes(cls: type, enc: Any) -> bytes:
    """A project class's own attributes as they are now, sorted by name. Left out: dunder and
    enum-reserved (`_name_`) names, enum members (the statement or the class's content has
    them), slot descriptors, instances of library classes under a private name (a library
    metaclass's bookkeeping), and functions of the class statement bound under their own name
    (so a class with only methods adds nothing, and its digest is its statement's). Empty
    when nothing is left."""
    import enum
    import functools

    out: List[bytes] = []
    try:
        attrs = dict(vars(cls))
    except TypeError:
        return b""
    key = enc.key
    for name in sorted(attrs):
        enc.key = f"{key}.{name}"  # what an UnstableConstantWarning names
        if name.startswith("__") and name.endswith("__"):
            continue
        if len(name) > 2 and name.startswith("_") and name.endswith("_"):
            continue  # _member_map_, _value2member_map_ (filled at run time by Flag), ...
        if name == "_abc_impl":  # ABC's cache of subclass checks, filled at run time
            continue
        x = attrs[name]
        if isinstance(x, _SLOTS) or isinstance(x, enum.Enum):
            continue
        if name.startswith("_") and _library_state(x, enc):
            continue  # a library's private machinery (SQLAlchemy's _sa_class_manager, ...)
        if isinstance(x, functools.singledispatchmethod):
            out.append(name.encode() + b"=dispatchmethod:" + dispatch_bytes(x.dispatcher, enc, 1))
            continue
        kind, held = _unwrap(x)
        if kind and all(f is None or _own(cls, name, f) for f in held):
            continue  # the statement's own classmethod, staticmethod, property...
        if not kind and _own(cls, name, x):
            continue  # the statement's own method
        if kind:
            body = b"%s(%s)" % (kind, b",".join(_held_bytes(cls, f, enc) for f in held))
        else:
            body = _held_bytes(cls, x, enc)
        out.append(name.encode() + b"=" + body)
    enc.key = key
    return b"\0".join(out)


def _library_state(x: Any, enc: Any) -> bool:
    """An instance of a library's own class (not data, a container, code or a descriptor of
    code): under a private name, the bookkeeping of a library's metaclass or a run-time
    cache, whose encoding would cost much and may not be stable."""
    import functools

    if isinstance(x, (type(None), bool, int, float, complex, str, bytes, dict, list, tuple,
                      set, frozenset, type, types.FunctionType, types.MethodType, staticmethod,
                      classmethod, property, functools.partial)):
        return False
    return not enc.is_project(type(x)) and not callable(x)


def _held_bytes(cls: type, f: Any, enc: Any) -> bytes:
    if f is None:
        return b"-"
    if isinstance(f, types.FunctionType) and _own(cls, getattr(f, "__name__", ""), f):
        return b"own:" + f.__qualname__.encode()  # the statement's, bound under another name
    return bytes(enc.encode(f, 1))


