"""Content-addressed blobs: small ones as rows of the ``blobs`` table, bigger ones as files
under cas/, every one verified against its name (the xxh3-128 digest) before it is trusted.
A value is written from its buffers, hashed on the way (``put_parts``), and read back mapped
copy-on-write (``map``); output files are captured and restored by the fastest safe copy."""

from __future__ import annotations

import errno
import io
import mmap
import os
import sqlite3
from typing import IO, Any, Iterator, List, Optional, Sequence, Set, Tuple

import xxhash

from zenbuild.digest import StatCache, hash_stream, is_digest
from zenbuild.errors import CorruptBlob
from zenbuild.records import record
from zenbuild.serialize import flat, part_size

# Blobs up to this size live in the database (table `blobs`) rather than as files: creating a
# file costs 0.1-0.5 ms on the virtual disks we run on, and a cold run of N steps would create
# 2N of them (a return value and an output copy per step). Bigger blobs are files under cas/.
INLINE_MAX = 64 * 1024
# The stat cache key of a file blob's stamp (BlobStore.map). A project file of that name could
# only make the two records replace each other: each would then be hashed again, never trusted
# wrongly (a record is trusted only for the exact stat it was made for).
STAMP_PREFIX = ":blob:"


# a restore's temp file: never opened through a symlink planted at its name (O_NOFOLLOW)
_WRITE_NEW = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))

class BlobStore:
    """Blobs of one store: ``db`` holds the inline ones, ``cas`` the files, written first under
    ``tmp`` and renamed into place, so a killed run never leaves a torn blob under a real name."""

    def __init__(self, db: sqlite3.Connection, cas: str, tmp: str) -> None:
        self.db = db
        self.cas = cas
        self.tmp = tmp
        self._made_dirs: Set[str] = set()
        # file blobs this process wrote or hashed whole: mapped again without rehashing
        self._verified: Set[str] = set()

    def path(self, digest: str) -> str:
        """Where a file blob lives (blobs up to INLINE_MAX bytes are in the database). A digest
        comes from rows and remote entries: anything but 32 hex digits is no blob (KeyError),
        never a path ("ab/home/you/file" would otherwise name /home/you/file)."""
        if not is_digest(digest):
            raise KeyError(f"not a blob digest: {str(digest)[:80]!r}")
        return os.path.join(self.cas, digest[:2], digest[2:])

    def _inline(self, digest: str) -> Optional[bytes]:
        row = self.db.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        data = row[0]
        # a damaged row may come back as text: its bytes will not match the digest
        return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)

    def has(self, digest: str) -> bool:
        if self.db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone():
            return True
        try:
            return os.path.exists(self.path(digest))
        except KeyError:
            return False

    def _tmpfile(self) -> Tuple[int, str]:
        return new_tmp(self.tmp)

    def _place(self, tmp: str, digest: str) -> None:
        if not is_digest(digest):
            raise KeyError(digest)
        _place_file(self.cas, tmp, digest, self._made_dirs)

    def put(self, data: Any) -> str:
        """Store bytes (or a value's parts, as put_parts does). Returns the digest."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return self.put_parts(data)
        digest = xxhash.xxh3_128_hexdigest(data)
        if len(data) <= INLINE_MAX:
            self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, data))
            return digest
        if not os.path.exists(self.path(digest)):
            fd, tmp = self._tmpfile()
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self._place(tmp, digest)
            except BaseException:
                unlink_quiet(tmp)
                raise
        return digest

    def put_parts(self, parts: Sequence[Any]) -> str:
        """Store the concatenation of ``parts`` (bytes-like, in order) without ever joining
        a big one (see ``write_parts``). Returns the digest."""
        size = sum(part_size(p) for p in parts)
        if size <= INLINE_MAX:
            return self.put(b"".join(flat(parts)))
        digest = write_parts(self.cas, self.tmp, parts, self._made_dirs)
        self._verified.add(digest)
        return digest

    def adopt(self, stored: StoredValue) -> str:
        """Take a value another process of this run wrote into this store (a Dask or -j
        worker: ``write_parts``, which hashed exactly the bytes it wrote) as this process's
        own: it is mapped from now on without rehashing. Raises KeyError when the blob is
        not there with its size (the worker saw another store)."""
        path = self.path(stored.digest)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            try:  # a shared filesystem (NFS) may cache the folder as it was before the worker's
                os.listdir(os.path.dirname(path))  # rename: reading the folder revalidates it
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise KeyError(stored.digest) from None
        if size != stored.size:
            raise KeyError(stored.digest)
        self._verified.add(stored.digest)
        return stored.digest

    def map(self, digest: str, stamps: Optional[StatCache] = None) -> Any:
        """The blob's bytes to load a value from: a file blob mapped copy-on-write (mmap
        ACCESS_COPY: O(1), and a write into it changes private pages of this mapping only,
        never the store), an inline blob as bytes. A file blob is verified the first time
        this process maps it: read and hashed (through a small buffer: its pages are not
        made part of this process's memory), or, given ``stamps`` (the run's stat cache), not
        read at all when its stat is the one recorded when it was last verified (git's
        racy-clean rule; any write to the file changes its ctime). A mismatch raises
        CorruptBlob (after removing it). Each call gives a new mapping, so two loads never
        share pages. Raises KeyError."""
        data = self._inline(digest)
        if data is not None:
            if xxhash.xxh3_128_hexdigest(data) != digest:
                self.delete(digest)
                raise CorruptBlob(digest)
            return data
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise KeyError(digest) from None
        try:
            st = os.fstat(fd)
            if st.st_size == 0:
                self.delete(digest)
                raise CorruptBlob(digest)
            if digest not in self._verified:
                self._verify_fd(digest, fd, stamps, st)
            mm = MappedBlob(fd, 0, access=mmap.ACCESS_COPY)
            mm.path = path
            _mapped().add(mm)
        finally:
            os.close(fd)
        return mm

    def _verify_fd(self, digest: str, fd: int, stamps: Optional[StatCache],
                   st: Optional[os.stat_result] = None) -> None:
        """Check open file blob ``digest`` against its name: by its stamp in ``stamps`` when
        its stat is the one recorded there, else by reading it through a small buffer (and
        stamping it). A mismatch removes it and raises CorruptBlob."""
        if stamps is not None:
            actual = stamps.digest(STAMP_PREFIX + digest, self.path(digest),
                                   st if st is not None else os.fstat(fd))[0]
        else:
            actual = _hash_fd(fd)[0]
        if actual != digest:
            self.delete(digest)
            raise CorruptBlob(digest)
        self._verified.add(digest)

    def put_file(self, path: str, private: bool = False) -> Tuple[str, int]:
        """Copy a file into the store. Returns (digest, size). A big file is copied by the
        fastest safe means (reflink, then copy_file_range, then a streaming copy: see
        ``fast_copy``) and the copy is hashed, read through one 1 MiB buffer: the digest is
        of exactly the bytes stored, even if the file changes meanwhile. ``private``: a file
        others may not read (mode 0600, 0640...): kept as a file blob that only its owner can
        read, never in the database, whatever its size."""
        with open(path, "rb") as src:
            if not private:
                head = src.read(INLINE_MAX + 1)
                if len(head) <= INLINE_MAX:
                    return self.put(head), len(head)
                src.seek(0)
            fd, tmp = new_tmp(self.tmp, 0o600 if private else 0o644)
            try:
                try:
                    digest, size = copy_hashed(src.fileno(), fd, tmp)
                finally:
                    os.close(fd)
                self._place(tmp, digest)
            except BaseException:
                unlink_quiet(tmp)
                raise
        return digest, size

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified. Raises CorruptBlob (after removing it) or KeyError."""
        data = self._inline(digest)
        if data is None:
            try:
                with open(self.path(digest), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise KeyError(digest) from None
        if xxhash.xxh3_128_hexdigest(data) != digest:
            self.delete(digest)
            raise CorruptBlob(digest)
        return data

    def open(self, digest: str) -> IO[bytes]:
        """A binary file object over the blob's bytes (not verified). Raises KeyError."""
        data = self._inline(digest)
        if data is not None:
            return io.BytesIO(data)
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise KeyError(digest) from None

    def delete(self, digest: str) -> bool:
        """Remove a blob wherever it lives; False when there was none."""
        self._verified.discard(digest)
        gone = self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,)).rowcount > 0
        self.db.execute("DELETE FROM files WHERE path = ?", (STAMP_PREFIX + digest,))
        try:
            os.unlink(self.path(digest))
            gone = True
        except (FileNotFoundError, KeyError):  # KeyError: not a digest, so no file of ours
            pass
        return gone

    def restore_file(self, digest: str, dest: str, mode: Optional[int] = None,
                     stamps: Optional[StatCache] = None) -> None:
        """Write blob ``digest`` to ``dest`` atomically (a temp file, then a rename), the
        blob verified first (not read for it when ``stamps`` holds its stat, see ``map``);
        a file blob is copied as put_file copies (reflink first)."""
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = f"{dest}.zenbuild-tmp-{os.getpid()}"
        first = 0o644 if mode is None else 0o600  # (a private file is never readable by
        try:  # others, not even before its mode is set)
            data = self._inline(digest)
            if data is not None:
                if xxhash.xxh3_128_hexdigest(data) != digest:
                    self.delete(digest)
                    raise CorruptBlob(digest)
                out_fd = os.open(tmp, _WRITE_NEW, first)
                with open(out_fd, "wb", closefd=True) as out:
                    out.write(data)
            else:
                try:
                    src = os.open(self.path(digest), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except FileNotFoundError:
                    raise KeyError(digest) from None
                try:
                    if digest not in self._verified:
                        self._verify_fd(digest, src, stamps)
                        os.lseek(src, 0, os.SEEK_SET)
                    out_fd = os.open(tmp, _WRITE_NEW, first)
                    try:
                        fast_copy(src, out_fd)
                    finally:
                        os.close(out_fd)
                finally:
                    os.close(src)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            unlink_quiet(tmp)
            raise

    def iter(self) -> Iterator[Tuple[str, int]]:
        """(digest, size) of every blob, in the database and under cas/."""
        yield from self.db.execute("SELECT digest, length(data) FROM blobs").fetchall()
        for d in sorted(os.listdir(self.cas)):
            sub = os.path.join(self.cas, d)
            if len(d) != 2 or not os.path.isdir(sub):
                continue
            for name in os.listdir(sub):
                try:
                    yield d + name, os.stat(os.path.join(sub, name)).st_size
                except FileNotFoundError:
                    continue

    def rehash(self, digest: str) -> Optional[Tuple[str, int]]:
        """(actual digest, size) of a stored blob's bytes, or None if it is gone."""
        try:
            src = self.open(digest)
        except KeyError:
            return None
        h = xxhash.xxh3_128()
        with src:
            n = hash_stream(src, h)
        return h.hexdigest(), n

    def clear(self) -> None:
        import shutil

        self.db.execute("DELETE FROM blobs")
        self.db.execute("DELETE FROM files WHERE substr(path, 1, ?) = ?",
                        (len(STAMP_PREFIX), STAMP_PREFIX))
        for name in os.listdir(self.cas):
            p = os.path.join(self.cas, name)
            if len(name) == 2 and os.path.isdir(p):
                shutil.rmtree(p)
        self._made_dirs.clear()


class MappedBlob(mmap.mmap):
    """A file blob mapped copy-on-write; ``path`` says which (an executor can then send a
    worker where an array lies instead of its bytes). The blobs mapped in this process are
    in ``MAPPED`` while alive: a torch tensor made on one keeps no Python reference to it, so
    where its memory lies is looked up there (executors/worker_store.py)."""

    path = ""


MAPPED: Any = None  # a weakref.WeakSet of them, made at the first mapping (a no-op maps none)


def _mapped() -> Any:
    global MAPPED
    if MAPPED is None:
        import weakref

        MAPPED = weakref.WeakSet()
    return MAPPED


# Small parts of a value are gathered into writes of this size; bigger ones are written (and
# hashed) straight from their memory, in pieces of at most WRITE_PIECE.
WRITE_CHUNK = 1 << 20
WRITE_PIECE = 1 << 20


def _write_hashed(fd: int, m: memoryview, h: Any) -> None:
    for i in range(0, m.nbytes, WRITE_PIECE):
        piece = m[i : i + WRITE_PIECE]
        h.update(piece)
        while piece:
            n = os.write(fd, piece)
            piece = piece[n:]


def new_tmp(tmp_dir: str, mode: int = 0o644) -> Tuple[int, str]:
    """A new temp file in STORE/tmp, open for writing: (fd, path), named PID-RANDOM so that
    the leftovers of a killed process are swept (store.outputs.sweep_store_tmp)."""
    name = os.path.join(tmp_dir, f"{os.getpid()}-{os.urandom(16).hex()}")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), name


def write_parts(cas: str, tmp_dir: str, parts: Sequence[Any],
                made_dirs: Optional[Set[str]] = None) -> str:
    """Write the concatenation of ``parts`` as a file blob of the store whose folders are
    ``cas`` and ``tmp_dir``: each part hashed and written in the same pass (small parts
    gathered into WRITE_CHUNK writes, big ones written from their own memory) to a temp file
    renamed into place under its digest. Any process that sees the store may call it (a
    worker storing its step's value). Returns the digest."""
    xh = xxhash.xxh3_128()
    size = sum(part_size(p) for p in parts)
    h: Any = HashBehind(xh) if size >= HASH_BEHIND_MIN else xh
    fd, tmp = new_tmp(tmp_dir)
    try:
        try:
            pending = bytearray()
            for p in flat(parts):  # (an array's C-order pieces made one at a time)
                m = memoryview(p)
                if m.nbytes < WRITE_CHUNK:
                    pending += m
                    if len(pending) < WRITE_CHUNK:
                        continue
                    m = memoryview(pending)
                elif pending:
                    _write_hashed(fd, memoryview(pending), h)
                    pending = bytearray()
                _write_hashed(fd, m, h)
                if m.obj is pending:  # full: the next small parts go to a new one (the
                    pending = bytearray()  # hashing thread may still read this one)
            if pending:
                _write_hashed(fd, memoryview(pending), h)
        finally:
            if h is not xh:
                h.finish()
        os.close(fd)
        fd = -1
        digest = xh.hexdigest()
        _place_file(cas, tmp, digest, made_dirs)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        unlink_quiet(tmp)
        raise
    return digest


# A blob at least this big is hashed in a thread while it is written or copied (xxhash and
# the kernel's copy release the GIL), so the pass costs about the write alone.
HASH_BEHIND_MIN = 16 << 20


class HashBehind:
    """``update(piece)`` hands a piece to a thread that hashes the pieces in order while the
    caller writes them; ``finish()`` waits for it (always call it: it ends the thread). The
    thread lives for one blob only: a -j run forks its workers only while the process has a
    single thread."""

    def __init__(self, h: Any) -> None:
        import queue
        import threading

        self.h = h
        self.q: Any = queue.SimpleQueue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="zenbuild-hash", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            piece = self.q.get()
            if piece is None:
                return
            if self.error is None:
                try:
                    self.h.update(piece)
                except BaseException as e:  # noqa: BLE001 - raised again by finish()
                    self.error = e

    def update(self, piece: Any) -> None:
        self.q.put(piece)

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _place_file(cas: str, tmp: str, digest: str, made_dirs: Optional[Set[str]]) -> None:
    final = os.path.join(cas, digest[:2], digest[2:])
    if os.path.exists(final):
        os.unlink(tmp)
        return
    folder = os.path.dirname(final)
    if made_dirs is None or folder not in made_dirs:
        os.makedirs(folder, exist_ok=True)
        if made_dirs is not None:
            made_dirs.add(folder)
    os.replace(tmp, final)


@record(frozen=True)
class StoredValue:
    """A step's value that the worker which ran it wrote into the store itself
    (``write_parts``): what comes back to the main process instead of the value. ``refs``:
    (module, qualname, code digest or None) of each class or function its pickle names, with
    the digest the worker gave it in the value (None: not project code), so the main process
    can check that its own digests of project code agree. ``types``: (module, qualname) of
    each class whose registered project code encoded it (serialize.buffers.Encoded.types),
    each also in ``refs`` with the code digest the worker gave it."""

    digest: str
    size: int
    refs: Tuple[Tuple[str, str, Optional[str]], ...] = ()
    types: Tuple[Tuple[str, str], ...] = ()


# ioctl FICLONE (linux/fs.h): the destination shares the source's extents (btrfs, xfs with
# reflink, bcachefs, overlayfs over them); copy-on-write makes it a copy
FICLONE = 0x40049409
# which copy the last fast_copy made ("reflink", "copy_file_range", "stream"): for tools
last_copy = ""


def fast_copy(src: int, dst: int) -> str:
    """Copy open file ``src`` (from its start) into the empty file ``dst``: a reflink
    where the filesystem has them, else os.copy_file_range (in the kernel, no copy through
    this process), else a streaming copy through one 1 MiB buffer. Returns which."""
    global last_copy
    if _reflinks(src, dst):
        return last_copy
    if _sparse_copy(src, dst):
        return last_copy
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        copied = [0]
        try:
            _copy_range(copy_range, src, dst, 1 << 30, copied)
            last_copy = "copy_file_range"
            return last_copy
        except OSError:
            if copied[0]:  # part copied: start again from the beginning the slow way
                os.ftruncate(dst, 0)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    while True:
        n = os.readv(src, [buf])
        if not n:
            break
        piece = view[:n]
        while piece:
            w = os.write(dst, piece)
            piece = piece[w:]
    last_copy = "stream"
    return last_copy


def copy_hashed(src: int, dst: int, dst_path: str) -> Tuple[str, int]:
    """``fast_copy`` of ``src`` into ``dst`` and the (digest, size) of the copy: the copy's
    own bytes are hashed (even if the source changes meanwhile, the digest names what was
    stored). A big copy by copy_file_range runs in a thread while this one hashes what it
    has copied so far, reading ``dst_path`` behind it, so the pass costs about the copy."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is None or os.fstat(src).st_size < HASH_BEHIND_MIN:
        fast_copy(src, dst)
        return hash_path(dst_path)
    if _reflinks(src, dst) or _sparse_copy(src, dst):
        return hash_path(dst_path)  # (a hole reads as zeros without touching the disk)
    import threading

    state = {"done": 0, "over": False}
    cond = threading.Condition()
    error: List[BaseException] = []

    def landed(done: int) -> None:
        with cond:
            state["done"] = done
            cond.notify()

    def copy() -> None:
        global last_copy
        try:
            _copy_range(copy_range, src, dst, COPY_PIECE, [0], landed)
            last_copy = "copy_file_range"
        except BaseException as e:  # noqa: BLE001 - handled by the hashing side
            error.append(e)
        with cond:
            state["over"] = True
            cond.notify()

    t = threading.Thread(target=copy, name="zenbuild-copy", daemon=True)
    t.start()
    h = xxhash.xxh3_128()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    at = 0
    rd = os.open(dst_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        while True:
            with cond:
                while state["done"] <= at and not state["over"]:
                    cond.wait()
                limit, over = state["done"], state["over"]
            if error:
                break
            while at < limit:
                n = os.preadv(rd, [view[: min(len(buf), limit - at)]], at)
                if n <= 0:  # the copy is shorter than copy_file_range said (truncated
                    raise OSError(errno.EIO, "the copy of an output shrank while it was "
                                  "hashed", dst_path)  # by someone else)
                h.update(view[:n])
                at += n
            if over and at >= state["done"]:
                break
    finally:
        t.join()
        os.close(rd)
    if error:
        if not isinstance(error[0], OSError):
            raise error[0]
        os.ftruncate(dst, 0)  # no copy_file_range here after all: the slow way, then hash
        os.lseek(dst, 0, os.SEEK_SET)
        fast_copy(src, dst)
        return hash_path(dst_path)
    return h.hexdigest(), at


def _copy_range(copy_range: Any, src: int, dst: int, piece: int, copied: List[int],
                landed: Optional[Any] = None) -> None:
    """os.copy_file_range from the start of ``src`` to its end (even if it grew meanwhile),
    ``piece`` bytes a call; ``copied[0]`` counts the bytes, ``landed(n)`` hears of each."""
    while True:
        n = copy_range(src, dst, piece, copied[0], copied[0])
        if n == 0:
            return
        copied[0] += n
        if landed is not None:
            landed(copied[0])


def _sparse_copy(src: int, dst: int) -> bool:
    """Copy a sparse ``src`` (fewer than half its bytes allocated: a disk image, a
    preallocated array file) into the empty ``dst`` keeping its holes: only the data
    segments SEEK_DATA/SEEK_HOLE find are copied, each at its offset, and the copy is
    extended to the full size. False (nothing written) for a file that is not sparse or a
    filesystem that cannot say where the data is."""
    global last_copy
    st = os.fstat(src)
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if (seek_data is None or seek_hole is None or st.st_size < HASH_BEHIND_MIN
            or st.st_blocks * 512 >= st.st_size // 2):
        return False
    copy_range = getattr(os, "copy_file_range", None)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    at = 0
    try:
        while at < st.st_size:
            try:
                start = os.lseek(src, at, seek_data)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data after ``at``: the rest is a hole
                    break
                raise
            end = os.lseek(src, start, seek_hole)
            pos = start
            while pos < end:
                if copy_range is not None:
                    n = copy_range(src, dst, end - pos, pos, pos)
                else:
                    n = os.preadv(src, [view[: min(len(buf), end - pos)]], pos)
                    if n > 0:
                        os.pwrite(dst, view[:n], pos)
                if n <= 0:
                    break
                pos += n
            at = max(end, pos)
        os.ftruncate(dst, st.st_size)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
            os.ftruncate(dst, 0)  # the filesystem cannot: the usual copy
            return False
        raise
    last_copy = "sparse"
    return True


def _reflinks(src: int, dst: int) -> bool:
    """Try a reflink (FICLONE) of src into dst; True when the filesystem made one."""
    global last_copy
    try:
        import fcntl

        fcntl.ioctl(dst, FICLONE, src)
    except (OSError, ImportError):
        return False
    last_copy = "reflink"
    return True


# copy_file_range hands the copy over in pieces of this size, hashed as they land.
COPY_PIECE = 8 << 20


def _hash_fd(fd: int) -> Tuple[str, int]:
    """(xxh3-128 digest, size) of an open file from its current offset, read through one
    1 MiB buffer (bounded memory for any size)."""
    h = xxhash.xxh3_128()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    size = 0
    while True:
        n = os.readv(fd, [buf])
        if not n:
            return h.hexdigest(), size
        h.update(view[:n])
        size += n


def hash_path(path: str) -> Tuple[str, int]:
    """(digest, size) of a file, in bounded memory."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
