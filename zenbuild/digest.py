"""xxh3-128 digests of bytes, files and folders; the stat cache with git's racy-clean rule."""

from __future__ import annotations

import os
import re
import stat
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import xxhash

from .records import record

CHUNK = 1 << 20
# A file whose mtime is this close to (or after) the moment its digest was recorded may have
# changed again within the filesystem's timestamp granularity without its stat changing
# ("racy git"). Such an entry is rehashed instead of trusted. The window follows the file's own
# timestamp precision: a filesystem with sub-millisecond mtimes (ext4, xfs, btrfs, tmpfs) stamps
# files from the kernel's coarse clock, at most a few jiffies (<= 10 ms) behind, so 100 ms is
# ample; a whole-millisecond or whole-second mtime (FAT, HFS+, some network filesystems) gets 2 s.
RACY_NS = 100_000_000
RACY_NS_COARSE = 2_000_000_000


def digest_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


_DIGEST = re.compile(r"[0-9a-f]{32}")


def is_digest(x: Any) -> bool:
    """Whether ``x`` has the shape of a digest (32 hex digits, what every blob is named by).
    Names from rows and remote entries become paths in the store: anything else never may."""
    return type(x) is str and _DIGEST.fullmatch(x) is not None


# The first read of a file: most inputs are small and are hashed from this one buffer (reading
# into a fresh 1 MiB bytearray instead cost ~15 us per file, more than a 4 KiB file's I/O).
FIRST_READ = 64 * 1024


def digest_file(path: str) -> Tuple[str, int]:
    """Return (digest, size) of a file's content: small files in one read, larger ones in
    1 MiB chunks."""
    digest, size, _ = digest_file_stat(path)
    return digest, size


def digest_file_stat(path: str) -> Tuple[str, int, os.stat_result]:
    """(digest, size, the file's stat once read): a caller compares that stat with one taken
    before, to know the content did not change while it was read. An fstat of the open file
    is cheaper than a second stat by path (no path lookup); a file replaced by rename meanwhile
    keeps its old inode here, and the digest is of that inode's content, so it stays right."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _digest_fd_stat(fd)
    finally:
        os.close(fd)


def _digest_fd_stat(fd: int) -> Tuple[str, int, os.stat_result]:
    """(digest, size, fstat after reading) of an open file read from its start."""
    data = os.read(fd, FIRST_READ)
    if len(data) < FIRST_READ:
        st = os.fstat(fd)
        if st.st_size == len(data):  # all of it: the fstat stands in for a read of EOF
            return xxhash.xxh3_128_hexdigest(data), len(data), st
        more = os.read(fd, FIRST_READ) if data else b""
        if not more:
            return xxhash.xxh3_128_hexdigest(data), len(data), os.fstat(fd)
        data += more
    h = xxhash.xxh3_128(data)
    size = len(data)
    buf = _chunk_buffer()
    view = memoryview(buf)
    try:
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            h.update(view[:n])
            size += n
    finally:
        view.release()
        if not isinstance(buf, bytearray):
            buf.close()
    return h.hexdigest(), size, os.fstat(fd)


def hash_stream(src: Any, h: Any, out: Any = None) -> int:
    """Feed ``src.read(CHUNK)`` chunks to hasher ``h`` (and write them to ``out``) until the
    end; returns the number of bytes."""
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return n
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        n += len(chunk)


def _chunk_buffer() -> Any:
    """A CHUNK-sized read buffer: an anonymous mapping (advised MADV_HUGEPAGE where the
    platform has it), else a bytearray. Measured on our VM, hashing 256 MiB from the page
    cache through it took 23-28 ms in a fresh process against 37-44 ms through a fresh
    bytearray; a plain mapping was in between (24-34 ms). A 1 MiB mapping cannot hold a 2 MiB
    huge page, so the advice never makes the kernel compact memory for it."""
    import mmap

    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None:
        return bytearray(CHUNK)
    try:
        m = mmap.mmap(-1, CHUNK)
        m.madvise(advice)
        return m
    except (OSError, ValueError):
        return bytearray(CHUNK)


StatKey = Tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@record
class FileRecord:
    key: StatKey
    digest: str
    recorded_ns: int

    def trusted_for(self, key: StatKey) -> bool:
        """True when the stat matches and the entry is not racily clean."""
        return key == self.key and trusted(key[1], self.recorded_ns)


def trusted(mtime_ns: int, recorded_ns: int) -> bool:
    """Not racily clean: the file's mtime is older than the recording by more than the
    filesystem's timestamp granularity."""
    window = RACY_NS_COARSE if mtime_ns % 1_000_000 == 0 else RACY_NS
    return mtime_ns + window < recorded_ns


class StatCache:
    """Maps a path to its content digest, rehashing only when the stat says it may have changed.

    ``records`` is loaded from and saved to the store in bulk; ``dirty`` holds what changed."""

    def __init__(
        self, records: Optional[Dict[str, Any]] = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        # ``clock``: now in ns, the moment a digest is recorded, which the racy-clean rule
        # compares with the file's mtime (tests pass a fake one to place "now" exactly)
        self.clock = clock
        # path -> FileRecord, or the store's raw row (size, mtime_ns, ino, ctime_ns, digest),
        # which is trusted when its stat matches (only trusted records are saved); rows stay
        # tuples, which keeps loading the stat cache of a 20,000-file project cheap.
        self.records: Dict[str, Any] = records or {}
        self.dirty: Dict[str, FileRecord] = {}
        self.hashed_bytes = 0

    def lookup(self, key_path: str, key: StatKey) -> Optional[str]:
        """The recorded digest of a file whose stat is ``key``, if it can be trusted (same
        stat, not racily clean); else None."""
        return self._recorded(key_path, key)

    def _recorded(self, key_path: str, key: StatKey) -> Optional[str]:
        rec = self.records.get(key_path)
        if type(rec) is tuple:
            if rec[:4] == key:  # rows are saved only once trusted (see Store.save_file_records)
                return rec[4]  # type: ignore[no-any-return]
        elif rec is not None and rec.trusted_for(key):
            return rec.digest  # type: ignore[no-any-return]
        return None

    def digest(
        self, key_path: str, path: str, st: Optional[os.stat_result] = None
    ) -> Tuple[str, int]:
        """Digest and size of the file at ``path``, cached under ``key_path`` (its
        project-relative name). Raises FileNotFoundError."""
        if st is None:
            st = os.stat(path)
        key = stat_key(st)
        known = self._recorded(key_path, key)
        if known is not None:
            return known, key[0]
        now = self.clock()
        digest, size, st2 = digest_file_stat(path)
        self.hashed_bytes += size
        if stat_key(st2) != key:
            # Changed while we read it: do not record a digest that may not match the stat.
            return digest, size
        rec = FileRecord(key, digest, now)
        self.records[key_path] = rec
        self.dirty[key_path] = rec
        return digest, size

    def digest_unrecorded(self, key_path: str, path: str) -> Optional[Tuple[str, int, StatKey, int]]:
        """For a path with no record (a cold run): (digest, size, stat key, st_mode), opening
        the file first so that its stats are fstats (one path lookup, not two). None when a
        record exists: use lookup()/digest(). Raises FileNotFoundError."""
        if key_path in self.records:
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            key = stat_key(st)
            if not stat.S_ISREG(st.st_mode):
                return "", 0, key, st.st_mode
            now = self.clock()
            digest, size, st2 = _digest_fd_stat(fd)
        finally:
            os.close(fd)
        self.hashed_bytes += size
        if stat_key(st2) == key:  # else it changed while we read it: do not record
            rec = FileRecord(key, digest, now)
            self.records[key_path] = rec
            self.dirty[key_path] = rec
        return digest, size, key, st.st_mode

    def remember(self, key_path: str, key: StatKey, digest: str, read_ns: int) -> None:
        """Record ``digest`` for a file whose stat ``key`` was taken after it was read (and
        matched the stat from before the read); ``read_ns``: when the read began."""
        rec = FileRecord(key, digest, read_ns)
        self.records[key_path] = rec
        self.dirty[key_path] = rec

    def record(
        self, key_path: str, path: str, digest: str, before: Optional[os.stat_result] = None
    ) -> None:
        """Record a digest we already know (a file we just wrote from known bytes, or just
        read: then ``before`` is its stat from before the read, and a file that changed
        meanwhile is not recorded)."""
        now = self.clock()
        st = os.stat(path)
        key = stat_key(st)
        if before is not None and stat_key(before) != key:
            self.records.pop(key_path, None)
            return
        rec = FileRecord(key, digest, now)
        self.records[key_path] = rec
        self.dirty[key_path] = rec

    def forget(self, paths: Iterable[str]) -> None:
        for p in paths:
            self.records.pop(p, None)
