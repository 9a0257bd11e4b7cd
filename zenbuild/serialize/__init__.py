"""Deterministic encoding of values: equal values give equal bytes, so equal digests.

Format (version 1): a magic prefix then one tagged item. Plain data (None, bool, int, float,
str, bytes, list, tuple, dict, set, frozenset, pathlib paths), numpy arrays and numpy scalars
(tag n: dtype and raw bytes, so a np.float32 comes back a np.float32) get a canonical encoding;
in fingerprints only, so do config objects (tag o, serialize.configs) and datetime dates,
datetimes, times and timedeltas (tag D: the type's name and its isoformat, UTC offset kept);
anything else is pickled (protocol 5) by the canonical pickler in ``serialize.pickler``: sets
sorted, torch tensors by dtype, shape and bytes, OmegaConf resolver caches dropped, and every
pickle made twice and compared, so a value whose pickle changes by itself raises Unstable.

A stored value (store format 3) is made as a list of buffers, never joined into one bytes
object (``serialize.buffers``): an array's payload is a view of its memory, padded so that it
starts at a 64-byte boundary of the blob (tag a), which lets a load map it in place; a pickle
keeps its protocol-5 buffers out of band (header ZBO1), aligned the same way. ``canonical()``
(fingerprints) keeps tag A and the exact bytes it always had.

What no value reads is no part of its encoding: the padding bytes of a dtype's items (x86's
80-bit np.longdouble in 16 bytes, the gaps of an aligned structured dtype: ``padding_mask``)
are written as zeros, here and in the canonical pickle. Ints of more than 4300 digits are
tag I (hex digits: Python refuses longer decimal text); pure paths keep their flavour (tags
P and W; a concrete Path is tag p, as always). See docs/store-format.md, "Values".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Callable, FrozenSet, List, Optional, Tuple

MAGIC = b"ZBV1"
_PICKLE_MAGIC = b"ZBP1"  # plain pickle.dumps (values stored before the canonical pickler)
_CANON_PICKLE_MAGIC = b"ZBP2"  # the canonical pickle: sets as persistent ids (pickler.py)
# A canonical pickle that names project code: "N:" then N bytes of "qualname=code digest"
# lines, then the pickle (see dumps).
_CODE_MAGIC = b"ZBC1"
# A canonical pickle with out-of-band buffers (serialize.buffers): "N:" and N bytes of code
# lines (maybe none), the pickle's length, the buffer count and each buffer's length (each
# "D;"), the pickle, then each buffer, zero-padded to start at an ALIGN boundary.
OOB_MAGIC = b"ZBO1"


class Unencodable(Exception):
    """Raised by canonical encoding for a value with no deterministic encoding."""

    def __init__(self, value: Any, where: str = "") -> None:
        super().__init__(f"{type(value).__module__}.{type(value).__qualname__}{where}")
        self.value = value
        # where ``value`` sits inside the value given to canonical(): ".start", "[2]", "['k']"
        self.path = ""

    def explain(self) -> str:
        """What is wrong, for a person, after "step S, argument A.path: "."""
        t = type(self.value)
        if t.__module__ == "zenbuild.dsl" and t.__name__ in ("Env", "File", "Dir", "Output"):
            return (f"{self.value!r} is inside a config object (a dataclass, NamedTuple or "
                    f"model). zenbuild finds {t.__name__}(...) only where it is passed as a "
                    "step argument (or inside a list, tuple or dict passed as one). Pass it "
                    "to the step as an argument of its own, and build the config inside the "
                    "step.")
        return (f"a value of type {self} has no deterministic encoding, so it cannot be part "
                "of a fingerprint. Pass plain data (numbers, strings, lists, dicts, paths, "
                "dates), or build the object inside the step.")


class Unstable(Exception):
    """A value whose encoding differs between two encodings of the same object in one process
    (its pickle holds a clock, a counter or the address of a temporary object), so its digest
    would change on every run and everything downstream of it would rerun for ever."""

    def __init__(self, value: Any, where: str = "", outer: Any = None) -> None:
        self.value = value
        self.where = where
        loc = ""
        if where:
            loc = f" at {where}" + (f" inside a {_type_name(outer)}" if outer is not None else "")
        from zenbuild.serialize.materialize import registration

        reg = registration(type(value))
        if reg is not None and reg.save:  # a @value_type: its save() is what differs
            super().__init__(
                f"a value of type {_type_name(value)}{loc} has no stable encoding: two calls "
                f"of its {reg.save}() in this process wrote different files (a timestamp, a "
                "random name, an unordered listing), so its digest would change on every run "
                "and every step that depends on it would rerun every time. Make "
                f"{reg.save}() write the same bytes for the same object.")
            return
        super().__init__(
            f"a value of type {_type_name(value)}{loc} has no stable encoding: two pickles of "
            "it made one after the other in this process differ (it holds a clock, a counter or "
            "a memory address), so its digest would change on every run and every step that "
            "depends on it would rerun every time. Convert it to plain data (dicts, lists, "
            "numbers, strings, numpy arrays) before returning or passing it, or give its class "
            "a __getstate__ or __reduce__ that leaves the per-process state out."
        )


def _type_name(v: Any) -> str:
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# Ints of at most this many decimal digits (Python's default
# sys.int_info.default_max_str_digits) are tag i, their decimal text; bigger ones are tag I,
# their hex digits. A fixed bound, not the process's current limit, so that an int's
# encoding never depends on what sys.set_int_max_str_digits the user's code made.
_DECIMAL_DIGITS = 4300


def decimal_int(v: int) -> bool:
    """Whether the int ``v`` has at most 4300 decimal digits (tag i). By its bit length
    first: 10 ** 4300 is not made at import (half a million instructions a run)."""
    bits = v.bit_length()
    if bits <= 14_280:  # < 2 ** 14280 < 10 ** 4300
        return True
    if bits > 14_285:  # >= 2 ** 14285 > 10 ** 4300
        return False
    return len(_decimal_text(abs(v))) <= _DECIMAL_DIGITS


def _decimal_text(v: int) -> str:
    """The decimal text of ``v`` whatever the process's int digit limit (decimal.Decimal
    converts an int without that limit); only for ints of at most 4300 digits."""
    import decimal

    return str(decimal.Decimal(v))



def _struct() -> Any:
    import struct

    return struct


# float("nan"), math.nan and numpy.nan: encoded as "nan", as always. Any other NaN (the sign
# bit set: -nan, the result of negating one; another payload) is "nan:" and its bits, so
# that a consumer gets the very value its producer returned, and a change between two NaNs
# changes the digest.
_NAN_BITS = 0x7FF8000000000000


def _nan_text(v: float) -> bytes:
    bits = _struct().unpack("<Q", _struct().pack("<d", v))[0]
    return b"nan" if bits == _NAN_BITS else b"nan:%016x" % bits


class _Encoder:
    """Appends the canonical encoding of values to ``out``. Each item is a tag byte, and for
    sized items the length in ASCII decimal and a colon, then the payload (netstring-like)."""

    def __init__(self, sort_keys: bool, items: FrozenSet[type] = frozenset(),
                 roots: Tuple[str, ...] = (), align: int = 0) -> None:
        self.sort_keys = sort_keys
        # a stored value (not a fingerprint): array payloads start at an ALIGN boundary of the
        # blob, whose first ``align`` bytes (the magic) come before ``out``
        self.align = align
        self._counted = (0, align)  # (parts of out summed, their total length + align)
        # marker types: their instances hold their whole encoding (tag m) in ``.item``
        self.items = items
        # project roots (fingerprints only): a path or string under one is encoded relative
        # to it (tags r and q), so moving the checkout keeps the fingerprint
        self.roots = roots
        self.out: List[Any] = []  # bytes, or uint8 memoryviews of array memory

    def pos(self) -> int:
        """The blob offset at which the next part starts (value mode)."""
        n, total = self._counted
        out = self.out
        for i in range(n, len(out)):
            total += len(out[i])
        self._counted = (len(out), total)
        return total

    def blob(self, tag: bytes, data: bytes) -> None:
        self.out.append(b"%s%d:" % (tag, len(data)))
        self.out.append(data)

    def enc(self, v: Any, depth: int = 0) -> None:
        out = self.out
        t = type(v)
        if t is str:
            if self.roots and (v[:1] in ("/", "\\") or v[1:2] == ":"):
                rel = self._relative(v)
                if rel is not None:
                    self.blob(b"q", rel.encode("utf-8", "surrogatepass"))
                    return
            b = v.encode("utf-8", "surrogatepass")
            out.append(b"s%d:" % len(b))
            out.append(b)
        elif t is int:
            try:
                b = b"i%d;" % v
            except ValueError:  # more digits than sys.set_int_max_str_digits allows
                b = b""
            if b and len(b) <= 4302:  # (at most 4300 digits, fewer when negative)
                out.append(b)
            else:
                self._int(v)
        elif v is None:
            out.append(b"N")
        elif t is bool:
            out.append(b"T" if v else b"F")
        elif t is float:
            out.append(b"f%s;" % (repr(v).encode() if v == v else _nan_text(v)))
        elif t is list or t is tuple:
            if depth > 200:
                raise Unencodable(v, " (nested too deeply or recursive)")
            out.append(b"%s%d:" % (b"l" if t is list else b"t", len(v)))
            marked = self.items
            for x in v:
                if type(x) in marked:
                    out.append(x.item)
                else:
                    self.enc(x, depth + 1)
        elif t in self.items:
            out.append(v.item)
        elif t is dict:
            if depth > 200:
                raise Unencodable(v, " (nested too deeply or recursive)")
            items = list(v.items())
            if self.sort_keys:
                items = sorted(items, key=lambda kv: _canon(kv[0], True, self.items))
            out.append(b"d%d:" % len(items))
            for k, x in items:
                self.enc(k, depth + 1)
                self.enc(x, depth + 1)
        elif t is bytes:
            out.append(b"b%d:" % len(v))
            out.append(v)
        elif t is set or t is frozenset:
            parts = sorted(_canon(x, self.sort_keys, self.items) for x in v)
            out.append(b"%s%d:" % (b"S" if t is set else b"Z", len(parts)))
            out.extend(parts)
        elif isinstance(v, PurePath):
            rel = self._relative(str(v)) if self.roots and v.is_absolute() else None
            if rel is not None:
                self.blob(b"r", rel.encode("utf-8", "surrogatepass"))
                return
            if isinstance(v, Path):  # a concrete path (PosixPath): tag p, as always
                self.blob(b"p", PurePosixPath(*v.parts).as_posix().encode() if v.parts else b".")
            else:  # a pure path keeps its flavour and its text: tag P (posix), W (windows)
                self.blob(b"W" if isinstance(v, PureWindowsPath) else b"P",
                          str(v).encode("utf-8", "surrogatepass"))
        elif t is complex:
            if all(x == x or _nan_text(x) == b"nan" for x in (v.real, v.imag)):
                self.blob(b"c", repr(v).encode())
            else:  # repr writes every NaN as nan: a NaN's sign and payload by their bits
                self.blob(b"c", b"bits:" + _struct().pack("<dd", v.real, v.imag).hex().encode())
        else:
            enc = _extra_encoder(v)
            if enc is None:
                raise Unencodable(v)
            enc(self, v)

    def _int(self, v: int) -> None:
        """An int that is big, or that the process cannot write as decimal text: tag i (its
        decimal text) up to 4300 digits, else tag I (its hex digits: no digit limit, linear
        time)."""
        if decimal_int(v):
            self.out.append(b"i%s;" % _decimal_text(v).encode())
        else:
            self.blob(b"I", b"%x" % v)

    def _relative(self, text: str) -> Optional[str]:
        """``text`` relative to the first project root it is under (posix), else None."""
        for root in self.roots:
            if text == root:
                return "."
            if text.startswith(root) and text[len(root) : len(root) + 1] in ("/", os.sep):
                return PurePath(text[len(root) + 1 :]).as_posix()
        return None


def _numpy_encode(e: _Encoder, v: Any) -> None:
    import numpy as np

    if v.dtype.hasobject:
        raise Unencodable(v, " with dtype=object")
    if v.dtype.fields is not None or v.dtype.subdtype is not None:
        raise Unencodable(v, " with a structured dtype")  # dtype.str would lose the fields
    if v.dtype.metadata:  # (h5py's enum and string dtypes): dtype.str would lose it too
        raise Unencodable(v, " with dtype metadata")
    header = f"{v.dtype.str}|{','.join(map(str, v.shape))}".encode()
    raw: Any
    keep = padding_mask(v.dtype)
    if keep is not None:  # np.longdouble on x86: the padding bytes of each item are zeroed,
        raw = Strided(v, keep)  # a piece at a time (they are garbage, no part of the value)
        if not e.align:  # a fingerprint: bytes
            raw = memoryview(b"".join(raw.pieces()))
    elif e.align and not v.flags.c_contiguous:  # a stored value: its C-order bytes a piece
        raw = Strided(v)  # at a time (Fortran order, a transpose, a slice with steps)
    else:  # its memory, not a copy (a 0-d array comes back 1-d: its shape is v's)
        raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8).data
    size = b"%d:" % raw.nbytes
    if e.align:  # tag a: header, zero padding, payload starting at an ALIGN boundary
        e.blob(b"a", header)
        base = e.pos() + 3 + len(size)  # a two-digit pad length and its colon come first
        pad = 10 + (-(base + 10)) % ALIGN
        e.out.append(b"%d:" % pad)
        e.out.append(bytes(pad))
    else:
        e.blob(b"A", header)
    e.out.append(size)
    e.out.append(raw)


class Strided:
    """The payload of a stored array that is not C-contiguous, in C order, made a bounded
    piece at a time (``pieces()``), so that storing a Fortran-ordered array, a transpose or a
    slice with steps never holds a whole C-ordered copy beside it. A part of a value's
    encoding (serialize.buffers.Encoded.parts) with the bytes and memoryviews: ``flat()``
    turns the parts into buffers only.

    ``keep`` (``padding_mask`` of the dtype): the array's items hold padding, and each piece
    is a copy with its padding bytes zeroed (any array, C-contiguous too; a pickle's
    out-of-band buffer is given as the uint8 array of its memory)."""

    __slots__ = ("arr", "nbytes", "keep")
    PIECE = 8 << 20  # bytes of a piece, about (a row bigger than this is cut along its axes)

    def __init__(self, arr: Any, keep: Any = None) -> None:
        self.arr = arr
        self.nbytes = int(arr.nbytes)
        self.keep = keep

    def __len__(self) -> int:
        return self.nbytes

    def pieces(self) -> Any:
        pieces = _c_pieces(self.arr, self.PIECE)
        return pieces if self.keep is None else _zeroed(pieces, self.keep, self.PIECE)


def _zeroed(pieces: Any, keep: Any, size: int) -> Any:
    """Copies of ``pieces`` (whole items of ``keep.size`` bytes each), at most about
    ``size`` bytes each, with the bytes ``keep`` has 0 at (padding) zeroed."""
    import numpy as np

    n = keep.size
    step = max(1, size // n) * n
    for p in pieces:
        m = np.frombuffer(p, dtype=np.uint8)
        for i in range(0, m.size, step):
            yield (m[i:i + step].reshape(-1, n) & keep).reshape(-1).data


# dtype -> its padding_mask (None: no padding); a handful of dtypes in practice
_PADDING: dict = {}


def padding_mask(dt: Any) -> Any:
    """For a numpy dtype whose items hold padding bytes (bytes no value reads or writes,
    left with whatever the memory held): a uint8 array of ``dt.itemsize``, 0xFF at the bytes
    of the value, 0 at the padding. None when it has none (every dtype but those below), so
    their encoding is their memory, as always.
    Padding: np.longdouble as x86's 80-bit extended float in 12 or 16 bytes (and
    np.clongdouble, two of them), and a structured dtype's bytes no field covers (an aligned
    dtype's gaps, an offsets= layout), also inside nested fields. Not for a dtype holding
    objects (pickled by numpy as objects, not as memory)."""
    try:
        return _PADDING[dt]
    except KeyError:
        pass
    except TypeError:  # pragma: no cover - an unhashable dtype
        return _padding_mask(dt)
    keep = _padding_mask(dt)
    if len(_PADDING) > 1000:
        _PADDING.clear()
    _PADDING[dt] = keep
    return keep


def _padding_mask(dt: Any) -> Any:
    import numpy as np

    if dt.hasobject or dt.itemsize == 0:
        return None
    value = _value_bytes(dt, np)
    if value is None or all(value):
        return None
    return np.frombuffer(bytes(0xFF if b else 0 for b in value), dtype=np.uint8)


def _value_bytes(dt: Any, np: Any) -> Any:
    """A list of ``dt.itemsize`` bools (True: a byte of the value), or None: all are."""
    if dt.fields is not None:
        out = [False] * dt.itemsize
        for field in dt.fields.values():
            fdt, off = field[0], field[1]
            inner = _value_bytes(fdt, np)
            for i in range(fdt.itemsize):
                if inner is None or inner[i]:
                    out[off + i] = True
        return out
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        inner = _value_bytes(base, np)
        if inner is None:
            return None
        return inner * (dt.itemsize // max(base.itemsize, 1))
    if dt.type is np.longdouble or dt.type is np.clongdouble:
        info = np.finfo(np.longdouble)
        half = dt.itemsize if dt.kind == "f" else dt.itemsize // 2
        if info.nmant != 63 or info.nexp != 15 or half <= 10:
            return None  # IEEE quad, double-double, a plain double: no padding
        big = dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big")
        # the 10 bytes of the value come first (last when byte-swapped), then the padding
        one = [False] * (half - 10) + [True] * 10 if big else [True] * 10 + [False] * (half - 10)
        return one * (dt.itemsize // half)
    return None


def _c_pieces(a: Any, size: int) -> Any:
    """``a``'s bytes in C order as uint8 memoryviews of about ``size`` bytes or fewer: each a
    C-contiguous copy of a block of whole rows (the array itself when it is C-contiguous)."""
    import numpy as np

    if a.nbytes == 0:
        return
    if a.flags.c_contiguous:
        yield a.reshape(-1).view(np.uint8).data
        return
    row = a.nbytes // a.shape[0]
    if row > size and a.ndim > 1:
        for i in range(a.shape[0]):
            yield from _c_pieces(a[i], size)
        return
    k = max(1, size // row)
    for i in range(0, a.shape[0], k):
        yield np.ascontiguousarray(a[i:i + k]).reshape(-1).view(np.uint8).data


def flat(parts: Any) -> Any:
    """The buffers of a value's parts, in order: a Strided part as its pieces."""
    for p in parts:
        if type(p) is Strided:
            yield from p.pieces()
        else:
            yield p


def part_size(p: Any) -> int:
    """Bytes of one part of a value's encoding (bytes, a buffer or a Strided)."""
    return p.nbytes if type(p) is Strided else memoryview(p).nbytes


def _numpy_scalar_encode(e: _Encoder, v: Any) -> None:
    """A numpy scalar keeps its type: tag n, the dtype, then its raw bytes."""
    dt = v.dtype
    if dt.fields is not None or dt.itemsize == 0 or dt.hasobject or dt.metadata:
        raise Unencodable(v, " (a structured or empty numpy scalar)")
    e.blob(b"n", dt.str.encode())
    raw = v.tobytes()
    keep = padding_mask(dt)
    if keep is not None:  # a np.longdouble: its padding bytes zeroed
        import numpy as np

        raw = (np.frombuffer(raw, dtype=np.uint8) & keep).tobytes()
    e.blob(b"", raw)


# datetime values in fingerprints (tag D): the type's name, then its isoformat, which keeps
# microseconds and a timezone-aware value's UTC offset (2024-03-05T10:00:00+01:00 and the same
# instant at +00:00 are different params); a naive value is encoded as it is
_DATETIME_TYPES = ("date", "datetime", "time", "timedelta")


def _datetime_encode(e: _Encoder, v: Any) -> None:
    if not e.sort_keys:
        raise Unencodable(v)  # a stored value: the canonical pickle, which loads back
    name = type(v).__name__
    if name == "timedelta":
        text = f"{v.days},{v.seconds},{v.microseconds}"
    elif name == "date":
        text = v.isoformat()
    else:
        if v.tzinfo is not None and v.utcoffset() is None:
            raise Unencodable(v, " (its tzinfo gives no UTC offset)")
        text = v.isoformat() + (f"|fold={v.fold}" if v.fold else "")
    e.blob(b"D", f"{name}:{text}".encode())


def _extra_encoder(v: Any) -> Optional[Callable[[_Encoder, Any], None]]:
    t = type(v)
    if t.__module__ == "datetime" and t.__name__ in _DATETIME_TYPES:
        import datetime as dt

        if t in (dt.date, dt.datetime, dt.time, dt.timedelta):  # a subclass (pandas) is not
            return _datetime_encode
    if t.__module__ == "numpy" and "numpy" in sys.modules:
        import numpy as np

        if t is np.ndarray:  # subclasses (matrix, masked arrays) are pickled: types survive
            return _numpy_encode
        if isinstance(v, np.generic):
            return _numpy_scalar_encode
    from zenbuild.serialize.configs import config_encoder  # dataclasses, Enums, NamedTuples...
    return config_encoder(v)


# Array payloads and out-of-band pickle buffers of a stored value start at a multiple of this
# offset in the blob (a cache line, and more than any dtype's alignment).
ALIGN = 64


def _canon(v: Any, sort_keys: bool, items: FrozenSet[type] = frozenset(),
           roots: Tuple[str, ...] = ()) -> bytes:
    e = _Encoder(sort_keys, items, roots)
    e.enc(v)
    return b"".join(e.out)


def canonical(value: Any, items: FrozenSet[type] = frozenset(), roots: Tuple[str, ...] = ()) -> bytes:
    """Canonical bytes for fingerprinting (dict keys sorted). Raises Unencodable (its
    ``path`` says where in ``value`` the unencodable part is).
    Instances of the types in ``items`` (markers) carry their complete encoding, under a tag
    of its own (m) that user data never has, in their ``item`` attribute. A path (or string)
    under one of ``roots`` (absolute, no trailing slash) is encoded relative to it."""
    try:
        return _canon(value, True, items, roots)
    except Unencodable as e:
        if e.value is not value:
            e.path = _path_to(value, e.value) or ""
        raise


def _path_to(value: Any, target: Any, depth: int = 0) -> Optional[str]:
    """Where ``target`` (by identity) sits inside ``value``: "" for itself, ".field" of a
    config object, "[i]" of a list or tuple, "[key]" of a dict; None when not found."""
    if value is target:
        return ""
    if depth > 100:
        return None
    t = type(value)
    parts: List[Tuple[str, Any]] = []
    if t is list or t is tuple:
        parts = [(f"[{i}]", x) for i, x in enumerate(value)]
    elif t is dict:
        for k, x in value.items():
            parts += [(f"[{k!r}]", x), (" (a dict key)", k)]
    elif t is set or t is frozenset:
        parts = [(" (an item of a set)", x) for x in value]
    else:
        from zenbuild.serialize.configs import fields_of, kind_of

        kind = kind_of(value)
        if kind is not None and kind != "enum":
            parts = [(f".{k}", x) for k, x in fields_of(value, kind).items()]
    for label, x in parts:
        got = _path_to(x, target, depth + 1)
        if got is not None:
            return label + got
    return None


def dumps(value: Any, code_of: Optional[Callable[[Any], Optional[str]]] = None) -> bytes:
    """Serialize a step's return value deterministically, as one bytes object: the canonical
    encoding for plain data and arrays, else the canonical pickle (see
    ``serialize.buffers.encode_value``, which gives the same bytes as a list of buffers and is
    what the store writes). Raises Unstable for a value whose pickle is not stable (and
    whatever pickle raises for an unpicklable one)."""
    from zenbuild.serialize.buffers import encode_value

    return encode_value(value, code_of).tobytes()


class _Decoder:
    """Reads one encoding from ``data`` (bytes, or an mmap: both find and slice). Array
    payloads are views of ``view``: writable memory (a private, copy-on-write mapping of the
    blob, or a private copy of its bytes) that the arrays own from then on."""

    def __init__(self, data: Any, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self._view: Optional[memoryview] = None

    def view(self) -> memoryview:
        if self._view is None:
            v = memoryview(self.data)
            self._view = memoryview(bytearray(v)) if v.readonly else v
        return self._view

    def until(self, sep: bytes) -> bytes:
        end = self.data.find(sep, self.pos)
        if end < 0:
            raise ValueError(f"corrupt value encoding (no {sep!r} after {self.pos})")
        b = bytes(self.data[self.pos : end])
        self.pos = end + 1
        return b

    def size(self) -> int:
        return int(self.until(b":"))

    def chunk(self) -> bytes:
        n = self.size()
        b = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return b

    def span(self) -> memoryview:
        """The next sized payload, as a writable view (no copy for a mapped blob)."""
        n = self.size()
        b = self.view()[self.pos : self.pos + n]
        self.pos += n
        return b

    def dec(self) -> Any:
        tag = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if tag == b"s":
            return self.chunk().decode("utf-8", "surrogatepass")
        if tag == b"i":
            text = self.until(b";")
            try:
                return int(text)
            except ValueError:  # the process lowered sys.set_int_max_str_digits
                if not text.lstrip(b"-").isdigit():
                    raise
                import decimal

                return int(decimal.Decimal(text.decode()))
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"f":
            text = self.until(b";")
            if text.startswith(b"nan:"):  # a NaN other than float("nan"): its bits
                st = _struct()
                return float(st.unpack("<d", st.pack("<Q", int(text[4:], 16)))[0])
            return float(text)
        if tag == b"b":
            return self.chunk()
        if tag in (b"l", b"t"):
            n = self.size()
            items: List[Any] = [self.dec() for _ in range(n)]
            return items if tag == b"l" else tuple(items)
        if tag == b"d":
            n = self.size()
            d = {}
            for _ in range(n):
                k = self.dec()
                d[k] = self.dec()
            return d
        if tag in (b"S", b"Z"):
            n = self.size()
            s = {self.dec() for _ in range(n)}
            return s if tag == b"S" else frozenset(s)
        if tag == b"p":
            return Path(self.chunk().decode())
        if tag == b"P":
            return PurePosixPath(self.chunk().decode("utf-8", "surrogatepass"))
        if tag == b"W":
            return PureWindowsPath(self.chunk().decode("utf-8", "surrogatepass"))
        if tag == b"I":
            return int(self.chunk(), 16)
        if tag == b"c":
            text = self.chunk()
            if text.startswith(b"bits:"):  # a NaN part: the two doubles' bits
                return complex(*_struct().unpack("<dd", bytes.fromhex(text[5:].decode())))
            return complex(text.decode())
        if tag == b"n":
            import numpy as np

            scalar_type = np.dtype(self.chunk().decode())
            raw = self.chunk()
            if scalar_type.itemsize == 0:
                return np.zeros((), dtype=scalar_type)[()]
            return np.frombuffer(raw, dtype=scalar_type)[0]
        if tag == b"A" or tag == b"a":
            import numpy as np

            header = self.chunk().decode()
            # the shape follows the last "|": a one-byte or flexible dtype's str starts
            # with one ("|u1", "|b1", "|S3")
            dtype, _, shape_s = header.rpartition("|")
            shape = tuple(int(x) for x in shape_s.split(",")) if shape_s else ()
            if tag == b"a":
                pad = self.size()
                self.pos += pad  # the padding
            dt = np.dtype(dtype)
            span = self.span()
            if dt.itemsize == 0:  # (np.dtype("V0"), a structured dtype of no fields): no
                return np.zeros(shape, dtype=dt)  # bytes, and frombuffer refuses the dtype
            return np.frombuffer(span, dtype=dt).reshape(shape)
        raise ValueError(f"corrupt value encoding (tag {tag!r} at {self.pos - 1})")


def loads(data: Any) -> Any:
    """The value stored as ``data``: bytes, or a blob mapped copy-on-write (mmap ACCESS_COPY),
    whose arrays and out-of-band buffers then stay in the mapping: no copy is made, and a
    step that writes into one changes only its own private pages."""
    magic = bytes(data[:4])
    if magic == MAGIC:
        return _Decoder(data, 4).dec()
    if magic == OOB_MAGIC:
        from zenbuild.serialize.buffers import load_oob

        return load_oob(data)
    if magic == _CANON_PICKLE_MAGIC:
        from zenbuild.serialize.pickler import canonical_unpickle

        return canonical_unpickle(bytes(data[4:]))
    if magic == _CODE_MAGIC:
        from zenbuild.serialize.pickler import canonical_unpickle

        colon = data.find(b":", 4)
        return canonical_unpickle(bytes(data[colon + 1 + int(data[4:colon]):]))
    if magic == _PICKLE_MAGIC:
        import pickle

        return pickle.loads(data[4:])
    raise ValueError("not a zenbuild value (unknown header)")


def value_digest(value: Any, code_of: Optional[Callable[[Any], Optional[str]]] = None) -> str:
    """The stable digest of a value zenbuild can store: the digest of ``dumps(value)``,
    hashed from its buffers (no copy of an array is made)."""
    from zenbuild.serialize.buffers import encode_value

    return encode_value(value, code_of).digest()


def register_value_type(cls: type, reduce: Callable[[Any], Any]) -> None:
    """Teach zenbuild how to store and digest instances of ``cls`` (and its subclasses):
    ``reduce(obj)`` returns what ``obj.__reduce__()`` would, ``(callable, args[, state])``,
    built only from parts that are the same in every process (no addresses, clocks or
    caches). Use it for a type whose own pickle is unstable; it is the hook the canonical
    pickler consults before torch, OmegaConf and the default reduction."""
    if not isinstance(cls, type) or not callable(reduce):
        from zenbuild.errors import MisuseError

        raise MisuseError(
            f"register_value_type(cls, reduce) takes a class and a function, not "
            f"{type(cls).__name__} and {type(reduce).__name__}")
    from zenbuild.serialize.pickler import REDUCERS

    REDUCERS[cls] = reduce
    if not own_reducer(reduce):
        # the code of what uses ``cls`` changes: a code fingerprinter that memoized it before
        # this registration drops its memos (fingerprint/code.py)
        GENERATION[0] += 1


# How many registrations of project code (register_value_type, @value_type) this process has
# made: a fingerprinter compares it with the count it memoized its code digests at.
GENERATION = [0]


def own_reducer(reduce: Any) -> bool:
    """Whether ``reduce`` is one of zenbuild's own reducers (polars, Arrow-backed pandas
    columns, registered lazily once a value is stored): its code is zenbuild's version, no
    part of a fingerprint, and nothing a stored value needs to record."""
    if hasattr(reduce, "save") and hasattr(reduce, "load"):  # @value_type's: the user's methods
        return False
    return (getattr(reduce, "__module__", None) or "").split(".")[0] == "zenbuild"

