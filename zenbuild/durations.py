"""Cache expiry durations ("90s", "15m", "6h", "2d", ISO-8601 "PT6H", "P1DT2H") and the
injectable wall clock that ages cached results (ZENBUILD_NOW, for tests and the CLI)."""

from __future__ import annotations

import math
import os
import re
import time
from typing import Optional

from zenbuild.errors import ConfigError
from zenbuild.lazyre import LazyPattern

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIMPLE = LazyPattern(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
_ISO = LazyPattern(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
HOW = ('a duration such as "90s", "15m", "6h", "2d" or an ISO-8601 duration such as '
       '"PT6H" or "P1DT12H"')


def parse_duration(text: object) -> float:
    """Seconds in ``text``; raises ValueError (with a message naming the accepted forms)."""
    if not isinstance(text, str):
        raise ValueError(f"expected {HOW}, got {type(text).__name__} {text!r}")
    m = _SIMPLE.fullmatch(text)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        iso = _ISO.fullmatch(text.strip())
        if iso is None or not any(iso.groupdict().values()) or text.strip().upper().endswith("T"):
            raise ValueError(f"expected {HOW}, got {text!r}")
        seconds = sum(float(v) * _UNITS[k] for k, v in iso.groupdict().items() if v)
    if seconds <= 0:
        raise ValueError(f"expected a duration longer than zero, got {text!r}")
    return seconds


# Sizes and ages of the cache settings ([cache] max_size, trash_keep) and `cache gc`.
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2,
               "MB": 1024**2, "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3,
               "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}


def parse_size(text: str) -> int:
    """"5GB" -> bytes. Units are binary (1 KB = 1024 B), as `du -h` counts."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ConfigError(f"size {text!r}: expected a number and a unit, such as 500MB or 5GB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_age(text: str) -> float:
    """"30d" -> seconds. Units: s, m, h, d, w."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ConfigError(f"age {text!r}: expected a number and a unit (s, m, h, d, w), such as 30d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """A duration for people, in its two largest units: 45s, 7h, 7h 30m, 2d 3h."""
    s = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0") or len(parts) == 1)


NOW_ENV = "ZENBUILD_NOW"


def _given_now(given: object) -> float:
    """``.run(now=...)``: seconds since the epoch (a number), or a timezone-aware datetime.
    Raises ParamError (exit 2) for anything else."""
    import datetime as dt

    if isinstance(given, dt.datetime) and given.utcoffset() is not None:
        return given.timestamp()
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        try:
            seconds = float(given)
        except OverflowError:  # an int past float's range
            seconds = float("inf")
        if math.isfinite(seconds):  # (NaN and inf age nothing: they stamp no entry)
            return seconds
    from zenbuild.errors import ParamError

    raise ParamError(f"run(now={given!r}): now is the wall time cached results are aged by, "
                     "as seconds since the epoch (a number such as time.time()) or a "
                     f"timezone-aware datetime; got a {type(given).__name__}. Pass "
                     f"now={int(time.time())}, or leave it out to use the clock.")


def now(given: Optional[float] = None) -> float:
    """The wall time cached results are aged by: ``given`` (checked: a number or an aware
    datetime), else ZENBUILD_NOW (seconds since the epoch; a test's injected clock), else the
    real time."""
    if given is not None:
        return _given_now(given)
    text = os.environ.get(NOW_ENV)
    if text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not math.isfinite(seconds):  # ("nan", "inf", "1e400": no time an entry can carry)
            from zenbuild.errors import ConfigError

            raise ConfigError(f"{NOW_ENV}={text!r} is not a number of seconds since the epoch; "
                              f"unset it or give a number such as {int(time.time())}")
        return seconds
    return time.time()
