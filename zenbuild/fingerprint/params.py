"""Params: the canonical encoding of a step's bound arguments (File/Dir/Output markers and
upstream handles included) for its fingerprint, and their short display for explain."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional, Tuple

from zenbuild.graph import EnvRef, FileRef, InputRef, OutputRef
from zenbuild.serialize import canonical, decimal_int
from zenbuild.serialize.configs import classes_met

# Marker types carry their own canonical encoding (``item``: tag m, the marker's kind and
# path), made once when the pipeline is traced.
_MARKERS = frozenset((FileRef, InputRef, OutputRef, EnvRef))


_PLAIN = frozenset((str, int, float, bool, type(None), bytes))


def encode_param(value: Any, root: Optional[str] = None,
                 code_of: Optional[Callable[[Any], Optional[str]]] = None) -> bytes:
    """Canonical bytes of one bound argument (markers included). Raises Unencodable.
    With the project ``root``, a path (or string) under it is encoded relative to it, so a
    param ``ROOT / "data.txt"`` keeps its fingerprint when the checkout moves.

    A config object (dataclass, Enum, NamedTuple, pydantic model) is encoded by its type's
    qualified name and fields (serialize/configs.py); with ``code_of`` (the fingerprinter's
    value_code), the code digest of each project class among them follows, so editing the
    class's code reruns the steps that take its instances, like any project class."""
    t = type(value)
    if t in _MARKERS:  # what canonical() makes of a marker, without an encoder
        return value.item  # type: ignore[no-any-return]
    if t is list or t is tuple:  # the usual [File(...), ...] and [handle, ...] arguments
        items = []
        for x in value:
            if type(x) not in _MARKERS:
                break
            items.append(x.item)
        else:  # canonical()'s list (l) or tuple (t) of items, as one join
            return b"%s%d:%s" % (b"l" if t is list else b"t", len(items), b"".join(items))
    roots = _roots(root) if root else ()
    if code_of is None or _no_classes(value):
        return canonical(value, items=_MARKERS, roots=roots)
    with classes_met() as met:
        data = canonical(value, items=_MARKERS, roots=roots)
    parts = []
    for cls in met:
        digest = code_of(cls)
        if digest is not None:
            parts.append(f"{cls.__module__}.{cls.__qualname__}={digest}")
    if parts:
        data += b"\0code:" + "\n".join(sorted(parts)).encode("utf-8", "surrogatepass")
    return data


_SHALLOW = _PLAIN | _MARKERS


def _no_classes(value: Any) -> bool:
    """Whether ``value`` is plain data or a marker, or a list/tuple of them (the usual
    ``[File(...), ...]`` argument): then no config class can be met while encoding it, and the
    collecting of classes met (a context manager per argument, per step, per run) is skipped.
    Anything else (a dict, a nested list, an object) takes the full path."""
    t = type(value)
    if t in _SHALLOW:
        return True
    if t is list or t is tuple:
        shallow = _SHALLOW
        for x in value:
            if type(x) not in shallow:
                return False
        return True
    return False


@functools.lru_cache(maxsize=8)
def _roots(root: str) -> Tuple[str, ...]:
    """The root as given and with symlinks resolved (a param may be built from either)."""
    given = os.path.abspath(root).rstrip(os.sep)
    if not given:
        return ()  # a project at / : nothing to make relative
    real = os.path.realpath(given)
    return (given,) if real == given else (given, real)


def _marker_display(v: Any) -> Any:
    if type(v) is int and not decimal_int(v):  # repr() would raise
        return _Shown(f"<int of {v.bit_length()} bits>")
    return _Shown(repr(v)) if type(v) in _MARKERS else v


class _Shown:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _marker_free(v: Any) -> Any:
    t = type(v)
    if t is list or t is tuple:
        return t(_marker_free(x) for x in v)
    if t is dict:
        return {k: _marker_free(x) for k, x in v.items()}
    return _marker_display(v)


def display_param(value: Any, limit: int = 60) -> str:
    """A short repr of a bound argument, markers shown as File(...)/Output(...)."""
    try:
        return _display_param(value, limit)
    except ValueError:  # an int of more than 4300 digits inside a set or a config object
        return f"<{type(value).__name__}>"


def _display_param(value: Any, limit: int) -> str:
    markers = _MARKERS  # a marker's display is its own repr: repr(_marker_free(m)) == repr(m)
    if type(value) is list and len(value) > 1:
        # a long list: stop once the repr is known to be too long (same text as below)
        r = "["
        for i, x in enumerate(value):
            r += (", " if i else "") + (repr(x) if type(x) in markers else repr(_marker_free(x)))
            if len(r) > limit:
                return r[: limit - 3] + "..."
        r += "]"
    else:
        r = repr(value) if type(value) in markers else repr(_marker_free(value))
    return r if len(r) <= limit else r[: limit - 3] + "..."
