"""Params: the canonical encoding of a step's bound arguments (File/Dir/Output markers and
upstream handles included) for its fingerprint, and their short display for explain."""

from __future__ import annotations

from typing import Any

from .dsl import InputRef, OutputRef
from .graph import FileRef
from .serialize import canonical


def encode_param(value: Any) -> bytes:
    """Canonical bytes of one bound argument (markers included). Raises Unencodable."""
    return canonical(value, _marker_hook)


def _marker_hook(v: Any) -> Any:
    t = type(v)
    if t is FileRef:
        return b"file\0" + v.path.encode() + b"\0" + (v.glob or "").encode()
    if t is InputRef:
        return b"input\0" + v.node.encode() + b"\0" + repr(v.path).encode()
    if t is OutputRef:
        return b"output\0" + v.path.encode()
    return None


def _marker_display(v: Any) -> Any:
    if isinstance(v, (FileRef, InputRef, OutputRef)):
        return _Shown(repr(v))
    return v


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
    r = repr(_marker_free(value))
    return r if len(r) <= limit else r[: limit - 3] + "..."
