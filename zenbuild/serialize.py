"""Deterministic encoding of values: equal values give equal bytes, so equal digests.

Format (version 1): a magic prefix then one tagged item. Plain data (None, bool, int, float,
str, bytes, list, tuple, dict, set, frozenset, pathlib paths) and numpy arrays get a canonical
encoding; anything else falls back to pickle (protocol 5), which is stable for the same object
graph but not guaranteed across library versions.
"""

from __future__ import annotations

import io
import math
import pickle
import sys
from pathlib import PurePath, PurePosixPath
from typing import Any, Callable, List, Optional

MAGIC = b"ZBV1"
_PICKLE_MAGIC = b"ZBP1"


class Unencodable(Exception):
    """Raised by canonical encoding for a value with no deterministic encoding."""

    def __init__(self, value: Any, where: str = "") -> None:
        super().__init__(f"{type(value).__module__}.{type(value).__qualname__}{where}")
        self.value = value


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Encoder:
    def __init__(self, sort_keys: bool) -> None:
        self.sort_keys = sort_keys
        self.out = io.BytesIO()

    def w(self, b: bytes) -> None:
        self.out.write(b)

    def blob(self, tag: bytes, data: bytes) -> None:
        self.w(tag + _uvarint(len(data)) + data)

    def enc(self, v: Any, depth: int = 0) -> None:
        if depth > 200:
            raise Unencodable(v, " (nested too deeply or recursive)")
        t = type(v)
        if v is None:
            self.w(b"N")
        elif t is bool:
            self.w(b"T" if v else b"F")
        elif t is int:
            self.blob(b"i", str(v).encode())
        elif t is float:
            if math.isnan(v):
                self.w(b"fnan")
            else:
                self.blob(b"f", repr(v).encode())
        elif t is str:
            self.blob(b"s", v.encode("utf-8", "surrogatepass"))
        elif t is bytes:
            self.blob(b"b", v)
        elif t is list or t is tuple:
            self.w((b"l" if t is list else b"t") + _uvarint(len(v)))
            for x in v:
                self.enc(x, depth + 1)
        elif t is dict:
            items = list(v.items())
            if self.sort_keys:
                items = sorted(items, key=lambda kv: _canon(kv[0], True))
            self.w(b"d" + _uvarint(len(items)))
            for k, x in items:
                self.enc(k, depth + 1)
                self.enc(x, depth + 1)
        elif t is set or t is frozenset:
            parts = sorted(_canon(x, self.sort_keys) for x in v)
            self.w((b"S" if t is set else b"Z") + _uvarint(len(parts)))
            for p in parts:
                self.w(p)
        elif isinstance(v, PurePath):
            self.blob(b"p", PurePosixPath(*v.parts).as_posix().encode() if v.parts else b".")
        elif t is complex:
            self.blob(b"c", repr(v).encode())
        else:
            enc = _extra_encoder(v)
            if enc is None:
                raise Unencodable(v)
            enc(self, v)


def _numpy_encode(e: _Encoder, v: Any) -> None:
    import numpy as np

    if v.dtype.hasobject:
        raise Unencodable(v, " with dtype=object")
    arr = np.ascontiguousarray(v)
    header = f"{arr.dtype.str}|{','.join(map(str, arr.shape))}".encode()
    e.blob(b"A", header)
    e.blob(b"", arr.tobytes())


def _extra_encoder(v: Any) -> Optional[Callable[[_Encoder, Any], None]]:
    mod = type(v).__module__
    if mod == "numpy" and "numpy" in sys.modules:
        import numpy as np

        if isinstance(v, np.ndarray):
            return _numpy_encode
        if isinstance(v, np.generic):
            return lambda e, x: e.enc(x.item())
    return None


def _canon(v: Any, sort_keys: bool) -> bytes:
    e = _Encoder(sort_keys)
    e.enc(v)
    return e.out.getvalue()


def canonical(value: Any) -> bytes:
    """Canonical bytes for fingerprinting (dict keys sorted). Raises Unencodable."""
    return _canon(value, True)


def dumps(value: Any) -> bytes:
    """Serialize a step's return value deterministically where the type allows."""
    try:
        return MAGIC + _canon(value, False)
    except Unencodable:
        pass
    return _PICKLE_MAGIC + pickle.dumps(value, protocol=5)


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def uvarint(self) -> int:
        shift = 0
        n = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def chunk(self) -> bytes:
        n = self.uvarint()
        b = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return b

    def dec(self) -> Any:
        tag = bytes(self.data[self.pos : self.pos + 1])
        self.pos += 1
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"i":
            return int(self.chunk())
        if tag == b"f":
            if bytes(self.data[self.pos : self.pos + 3]) == b"nan":
                self.pos += 3
                return math.nan
            return float(self.chunk())
        if tag == b"s":
            return self.chunk().decode("utf-8", "surrogatepass")
        if tag == b"b":
            return self.chunk()
        if tag in (b"l", b"t"):
            n = self.uvarint()
            items: List[Any] = [self.dec() for _ in range(n)]
            return items if tag == b"l" else tuple(items)
        if tag == b"d":
            n = self.uvarint()
            d = {}
            for _ in range(n):
                k = self.dec()
                d[k] = self.dec()
            return d
        if tag in (b"S", b"Z"):
            n = self.uvarint()
            s = {self.dec() for _ in range(n)}
            return s if tag == b"S" else frozenset(s)
        if tag == b"p":
            from pathlib import Path

            return Path(self.chunk().decode())
        if tag == b"c":
            return complex(self.chunk().decode())
        if tag == b"A":
            import numpy as np

            header = self.chunk().decode()
            dtype, shape_s = header.split("|")
            shape = tuple(int(x) for x in shape_s.split(",")) if shape_s else ()
            raw = self.chunk()
            return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        raise ValueError(f"corrupt value encoding (tag {tag!r} at {self.pos - 1})")


def loads(data: bytes) -> Any:
    if data[:4] == MAGIC:
        d = _Decoder(data[4:])
        return d.dec()
    if data[:4] == _PICKLE_MAGIC:
        return pickle.loads(data[4:])
    raise ValueError("not a zenbuild value (unknown header)")
