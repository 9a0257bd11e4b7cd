"""A stored value as a list of buffers (store format 3): the canonical encoding with array
payloads as views of the arrays' memory, or the canonical pickle with its protocol-5 buffers
out of band, both aligned so that a load can map them in place; and the load of the
out-of-band layout (ZBO1). Nothing here joins the buffers of a large value into one bytes
object: the store hashes and writes them in one pass."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import xxhash

if TYPE_CHECKING:  # pragma: no cover
    import pickle  # not at run time: a no-op run stores nothing (pickle costs 8M instructions)

from zenbuild.serialize import (
    _CANON_PICKLE_MAGIC,
    _CODE_MAGIC,
    ALIGN,
    MAGIC,
    OOB_MAGIC,
    Strided,
    Unencodable,
    Unstable,
    _Encoder,
    flat,
)

CodeOf = Callable[[Any], Optional[str]]
# A value encoded in at most this many bytes is kept as bytes by the run that made it (its
# consumers decode their copies from them); a bigger one is mapped from its blob.
INLINE_KEEP = 64 * 1024


class Encoded:
    """A value's encoding as ``parts`` (bytes and uint8 memoryviews, in order): their
    concatenation is the blob. ``size`` is its length in bytes. ``types``: the classes whose
    registered project reducer (register_value_type, @value_type) the pickle consulted, in
    the order first met: the code that made these bytes, recorded with the stored entry."""

    __slots__ = ("parts", "size", "types")

    def __init__(self, parts: List[Any], types: Tuple[type, ...] = ()) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)
        self.types = types

    def tobytes(self) -> bytes:
        return b"".join(flat(self.parts))

    def digest(self) -> str:
        """xxh3-128 of the blob (zenbuild.digest.digest_bytes of ``tobytes()``)."""
        if len(self.parts) == 1 and type(self.parts[0]) is not Strided:
            return xxhash.xxh3_128_hexdigest(self.parts[0])
        h = xxhash.xxh3_128()
        for p in flat(self.parts):
            h.update(p)
        return h.hexdigest()


def encode_value(value: Any, code_of: Optional[CodeOf] = None) -> Encoded:
    """The stored encoding of a step's value: the canonical encoding (plain data, numpy
    arrays by their memory) when it has one, else the canonical pickle. Raises Unstable for
    a value whose pickle is not stable (and whatever pickle raises for an unpicklable one).

    ``code_of(obj)`` gives the code digest of a class or function the pickle names, or None
    when it is not the project's own code. A value naming project code carries those digests
    in front of the pickle, so its digest (the identity downstream fingerprints use) changes
    when the code that will run on it changes, even when the pickled bytes do not."""
    e = _Encoder(False, align=len(MAGIC))
    try:
        e.enc(value)
    except Unencodable:
        return _pickled(value, code_of)
    return Encoded([MAGIC, *e.out])


class _Parts:
    """A pickle's file: keeps what the pickler writes (frames, and big payloads as they
    are), hashing it on the way."""

    def __init__(self) -> None:
        self.parts: List[Any] = []
        self.size = 0
        self.h = xxhash.xxh3_128()

    def write(self, b: Any) -> int:
        m = memoryview(b)
        if m.format != "B" or m.ndim != 1:
            m = m.cast("B")
        self.parts.append(m if not isinstance(b, bytes) else b)
        self.h.update(m)
        self.size += m.nbytes
        return m.nbytes


class _HashOnly:
    """A pickle's file that only hashes (the stability check holds no second copy)."""

    def __init__(self) -> None:
        self.h = xxhash.xxh3_128()

    def write(self, b: Any) -> int:
        m = memoryview(b)
        self.h.update(m)
        return m.nbytes


class _Buffers:
    """The buffer_callback: keeps each contiguous protocol-5 buffer out of band (a view, no
    copy); a non-contiguous one stays in band. Given ``first`` (the buffers of an earlier
    pickle of the same value), it checks instead that each buffer is the same as there:
    the same memory (an array pickled twice hands over the same memory: nothing to compare,
    and no pass over a large value's bytes), else the same bytes."""

    def __init__(self, first: Optional[List[memoryview]] = None) -> None:
        self.first = first
        self.views: List[memoryview] = []
        self.same = True
        # the pickler's ``padded`` (pickler._padded_reduce), and for each buffer of an array
        # whose items hold padding, its index in ``views`` -> its dtype's padding_mask
        self.padded: Dict[int, Tuple[Any, Any]] = {}
        self.keeps: Dict[int, Any] = {}

    def __call__(self, pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:
            return True
        if self.padded:
            hit = self.padded.pop(id(pb), None)
            if hit is not None:
                self.keeps[len(self.views)] = hit[1]
        if self.first is None:
            self.views.append(raw)
            return False
        i = len(self.views)
        self.views.append(raw)
        if self.same:
            before = self.first[i] if i < len(self.first) else None
            if before is None or before.nbytes != raw.nbytes:
                self.same = False
            else:
                at = buffer_address(before)
                self.same = (at is not None and at == buffer_address(raw)) or (
                    xxhash.xxh3_128_digest(before) == xxhash.xxh3_128_digest(raw))
        return False


def buffer_address(m: memoryview) -> Optional[int]:
    """Where a buffer's memory starts (None when it cannot be told without numpy)."""
    import sys

    if "numpy" not in sys.modules:
        return None
    import numpy as np

    return int(np.frombuffer(m, dtype=np.uint8).__array_interface__["data"][0])


def _pickle_pass(value: Any, out: Any, bufs: _Buffers, refs: Optional[List[Any]],
                 types: Optional[Dict[type, None]] = None) -> None:
    from zenbuild.serialize.pickler import PROTOCOL, _Pickler

    p = _Pickler(out, protocol=PROTOCOL, buffer_callback=bufs)
    p.refs = refs
    p.types = types
    p.padded = bufs.padded
    p.dump(value)


def _pickled(value: Any, code_of: Optional[CodeOf]) -> Encoded:
    """The canonical pickle with out-of-band buffers, made twice (the second time only
    hashed) and compared: a value whose pickle changes by itself raises Unstable."""
    refs: Optional[List[Any]] = [] if code_of is not None else None
    stream, bufs = _Parts(), _Buffers()
    used: Dict[type, None] = {}
    _pickle_pass(value, stream, bufs, refs, used)
    types = tuple(used)
    check, check_bufs = _HashOnly(), _Buffers(bufs.views)
    _pickle_pass(value, check, check_bufs, None)
    same = check_bufs.same and len(check_bufs.views) == len(bufs.views)
    check_bufs.views.clear()
    if not same or stream.h.digest() != check.h.digest():
        from zenbuild.serialize.pickler import locate_unstable

        where, part = locate_unstable(value)
        raise Unstable(part, where, value if where else None)
    head = b""
    if refs and code_of is not None:
        lines = {}
        for obj in refs:
            d = code_of(obj)
            if d is not None:
                lines[f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"] = d
        if lines:
            head = "\n".join(f"{k}={v}" for k, v in sorted(lines.items())).encode(
                "utf-8", "surrogatepass")
    if not bufs.views:  # exactly the layouts of store format 2
        if head:
            return Encoded([_CODE_MAGIC, b"%d:" % len(head), head, *stream.parts], types)
        return Encoded([_CANON_PICKLE_MAGIC, *stream.parts], types)
    lens = b"".join(b"%d;" % v.nbytes for v in bufs.views)
    top = b"%s%d:%s%d;%d;%s" % (OOB_MAGIC, len(head), head, stream.size, len(bufs.views), lens)
    parts: List[Any] = [top, *stream.parts]
    pos = len(top) + stream.size
    for i, v in enumerate(bufs.views):
        pad = -pos % ALIGN
        if pad:
            parts.append(bytes(pad))
        keep = bufs.keeps.get(i)
        if keep is None:
            parts.append(v)
        else:  # an array whose items hold padding: stored with it zeroed, piece by piece
            import numpy as np

            parts.append(Strided(np.frombuffer(v, dtype=np.uint8), keep))
        pos += pad + v.nbytes
    return Encoded(parts, types)


def _oob_layout(data: Any) -> Tuple[int, int, List[Tuple[int, int]]]:
    """(pickle start, pickle end, [(buffer start, end)]) of a ZBO1 blob."""
    colon = data.find(b":", 4)
    pos = colon + 1 + int(data[4:colon])

    def number() -> int:
        nonlocal pos
        end = data.find(b";", pos)
        if end < 0:
            raise ValueError("corrupt value (ZBO1 header)")
        n = int(data[pos:end])
        pos = end + 1
        return n

    stream = number()
    lens = [number() for _ in range(number())]
    start, at = pos, pos + stream
    spans = []
    for n in lens:
        at += -at % ALIGN
        spans.append((at, at + n))
        at += n
    if at > len(data):
        raise ValueError("corrupt value (ZBO1 buffers past the end)")
    return start, start + stream, spans


def load_oob(data: Any) -> Any:
    """Load a ZBO1 value: its buffers are views of ``data`` (writable: a copy-on-write
    mapping, or a private copy of bytes), so arrays in it are not copied."""
    from zenbuild.serialize.pickler import _Unpickler

    start, end, spans = _oob_layout(data)
    view = memoryview(data)
    if view.readonly:
        view = memoryview(bytearray(view))
    buffers = [view[a:b] for a, b in spans]
    return _Unpickler(io.BytesIO(bytes(view[start:end])), buffers=buffers).load()


def payload_spans(data: Any) -> Sequence[Tuple[int, int]]:
    """Where the out-of-band buffers of a ZBO1 blob lie (tests and tools)."""
    return _oob_layout(data)[2]
