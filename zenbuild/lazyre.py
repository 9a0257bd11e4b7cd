"""Regular expressions compiled on first use. ``re.compile`` runs the pattern compiler in
Python: about a million instructions a pattern, and a no-op run used to compile some twenty
at import, most of which it never matches (durations, notebooks, spool names, secrets)."""

from __future__ import annotations

import re
from typing import Any, Optional


class LazyPattern:
    """Stands for ``re.compile(pattern, flags)``: the pattern is compiled by its first use
    (``match``, ``fullmatch``, ``search``, ``findall``, ``split``, ``sub``...)."""

    __slots__ = ("_pattern", "_flags", "_rx")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._pattern = pattern
        self._flags = flags
        self._rx: Optional[re.Pattern[str]] = None

    def __getattr__(self, name: str) -> Any:  # for names that are not slots, or unset ones
        if name in LazyPattern.__slots__:  # an instance made without __init__ (copy, pickle)
            raise AttributeError(name)
        rx = self._rx
        if rx is None:
            rx = self._rx = re.compile(self._pattern, self._flags)
        return getattr(rx, name)

    def __reduce__(self) -> Any:  # copied or pickled as what it stands for, uncompiled
        return (LazyPattern, (self._pattern, self._flags))

    def __repr__(self) -> str:
        return f"LazyPattern({self._pattern!r})"
