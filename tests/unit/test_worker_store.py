"""Unit: a worker writes a large value into the store (executors.worker_store) exactly as the
main process would; the main process adopts it; a file blob verified once is mapped again in a
later process without being read, unless it changed (its stat stamp in the stat cache)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from zenbuild.digest import StatCache
from zenbuild.errors import CorruptBlob
from zenbuild.executors.worker_store import (
    StoreTarget,
    drop_target,
    make_target,
    store_value,
)
from zenbuild.serialize import loads
from zenbuild.serialize.buffers import encode_value
from zenbuild.store.blobs import StoredValue
from zenbuild.store.db import Store


class Opaque:  # a class the test module defines: its pickle names it
    def __init__(self, a: np.ndarray) -> None:
        self.a = a


def test_a_worker_stores_what_the_main_process_would(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    target = make_target(store.path)
    value = {"a": np.arange(1 << 18, dtype=np.float64), "name": "x"}
    stored = store_value(value, target)
    assert isinstance(stored, StoredValue)
    assert stored.digest == encode_value(value).digest()
    assert stored.size == encode_value(value).size and stored.refs == ()
    assert store.adopt_value(stored) == stored.digest
    assert (loads(store.map_blob(stored.digest))["a"] == value["a"]).all()
    # the classes a pickle names come back, for the main process to judge (no root: no
    # digests carried, None reported)
    obj = store_value(Opaque(np.ones(1 << 18)), target)
    assert isinstance(obj, StoredValue)
    assert (__name__, "Opaque", None) in obj.refs
    drop_target(target)
    assert not os.path.exists(target.marker)
    store.close()


def test_a_worker_digests_project_code_as_the_main_process_does(tmp_path: Path) -> None:
    """With the project root, the worker's value carries the code digest of the project class
    its pickle names, the one the main process's fingerprinter gives it: the blob is the one
    the main process would write, so it is adopted as it is (no second write)."""
    from zenbuild.fingerprint.code import CodeFingerprinter

    store = Store(str(tmp_path / "st"))
    target = make_target(store.path)
    root = str(Path(__file__).parent)  # this file is the project's code here
    value = Opaque(np.ones(1 << 18))
    stored = store_value(value, target, root)
    assert isinstance(stored, StoredValue)
    main = CodeFingerprinter(root, True, store.path)
    code = main.value_code(Opaque)
    assert code is not None and (__name__, "Opaque", code) in stored.refs
    assert stored.digest == encode_value(value, code_of=main.value_code).digest()
    assert stored.digest != encode_value(value).digest()  # the digest is really in it
    # numpy's own reconstructors are named too, and are no project's code
    assert all(d is None for m, _, d in stored.refs if m.startswith("numpy"))
    drop_target(target)
    store.close()


def test_what_a_worker_sends_back_by_value(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    target = make_target(store.path)
    small = np.arange(10)
    assert store_value(small, target) is small  # small: by value
    unpicklable = [lambda: 1] * 200_000
    assert store_value(unpicklable, target) is unpicklable  # the main process says why
    elsewhere = StoreTarget(target.cas, target.tmp, target.marker + "-not-here")
    big = np.ones(1 << 18)
    assert store_value(big, elsewhere) is big  # another store (no shared filesystem)
    drop_target(target)
    assert store_value(big, target) is big
    store.close()


def test_adopting_a_blob_that_is_not_there(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    stored = store_value(np.ones(1 << 18), make_target(store.path))
    with pytest.raises(KeyError):
        store.adopt_value(StoredValue("0" * 32, stored.size))
    with pytest.raises(KeyError):
        store.adopt_value(StoredValue(stored.digest, stored.size + 1))
    store.close()


def test_a_verified_blob_is_not_read_again(tmp_path: Path) -> None:
    path = str(tmp_path / "st")
    store = Store(path)
    value = np.arange(1 << 18, dtype=np.float64)
    digest = store.put_value(encode_value(value).parts)
    store.close()
    later = 10**20  # the clock of the stamps: long after the blob was written (not racy)
    stamps = StatCache(clock=lambda: later)
    first = Store(path)
    assert (loads(first.map_blob(digest, stamps)) == value).all()
    assert stamps.hashed_bytes > (1 << 21)  # read once to verify
    first.close()
    read = stamps.hashed_bytes
    second = Store(path)  # another process: its own verified set is empty
    assert (loads(second.map_blob(digest, stamps)) == value).all()
    assert stamps.hashed_bytes == read  # the stamp matched: not read
    second.close()
    # any write changes the blob's ctime: the stamp no longer matches and damage is found
    blob = os.path.join(path, "cas", digest[:2], digest[2:])
    with open(blob, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    third = Store(path)
    with pytest.raises(CorruptBlob):
        third.map_blob(digest, stamps)
    assert not os.path.exists(blob)
    third.close()


def test_a_big_blob_is_hashed_while_it_is_written(tmp_path: Path, monkeypatch) -> None:
    from zenbuild.store import blobs

    monkeypatch.setattr(blobs, "HASH_BEHIND_MIN", 1 << 20)
    threads: list = []
    real = blobs.HashBehind

    def counting(h):  # type: ignore[no-untyped-def]
        threads.append(h)
        return real(h)

    monkeypatch.setattr(blobs, "HashBehind", counting)
    store = Store(str(tmp_path / "st"))
    value = {"a": np.arange(1 << 19, dtype=np.float64), "b": list(range(50_000))}
    enc = encode_value(value)
    digest = store.put_value(enc.parts)
    assert len(threads) == 1 and digest == enc.digest()
    assert Path(store.blob_path(digest)).read_bytes() == enc.tobytes()
    store.close()


def test_a_big_output_is_hashed_behind_its_copy(tmp_path: Path, monkeypatch) -> None:
    import errno

    from zenbuild.digest import digest_bytes
    from zenbuild.store import blobs

    if not hasattr(os, "copy_file_range"):
        pytest.skip("no os.copy_file_range on this platform: the streaming copy is tested above")
    monkeypatch.setattr(blobs, "HASH_BEHIND_MIN", 1 << 20)
    monkeypatch.setattr(blobs, "COPY_PIECE", 256 << 10)
    monkeypatch.setattr(blobs, "_reflinks", lambda src, dst: False)  # a reflink is one call
    calls = []
    real = os.copy_file_range

    def piecewise(*args):  # type: ignore[no-untyped-def]
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", piecewise)
    src = tmp_path / "out.bin"
    data = os.urandom(5 << 20) + b"tail"
    src.write_bytes(data)
    store = Store(str(tmp_path / "st"))
    digest, size = store.put_file(str(src))
    assert size == len(data) and digest == digest_bytes(data)
    assert len(calls) >= 20 and max(calls) == 256 << 10  # copied in pieces, hashed behind
    assert Path(store.blob_path(digest)).read_bytes() == data
    # copy_file_range failing part way (another filesystem, an old kernel): the streaming
    # copy from the start, and the digest of what was stored
    failing = {"n": 0}

    def breaks(*args):  # type: ignore[no-untyped-def]
        failing["n"] += 1
        if failing["n"] > 3:
            raise OSError(errno.EXDEV, "cross-device")
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", breaks)
    src.write_bytes(data[::-1])
    d2, size2 = store.put_file(str(src))
    assert size2 == len(data) and d2 == digest_bytes(data[::-1])
    assert Path(store.blob_path(d2)).read_bytes() == data[::-1]
    store.close()


def test_a_restore_trusts_the_stamp_of_a_verified_blob(tmp_path: Path) -> None:
    import time

    path = str(tmp_path / "st")
    src = tmp_path / "out.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    store = Store(path)
    digest, _ = store.put_file(str(src))
    store.close()
    stamps = StatCache(clock=lambda: time.time_ns() + 10**10)  # recorded well after the write
    for i in range(2):
        s = Store(path)  # a new process each time: nothing verified yet
        s.restore_file(digest, str(tmp_path / f"back{i}.bin"), None, stamps)
        s.close()
        assert (tmp_path / f"back{i}.bin").read_bytes() == data
        if i == 0:
            read = stamps.hashed_bytes
            assert read >= len(data)
    assert stamps.hashed_bytes == read  # the second restore did not read the blob to verify it
    blob = os.path.join(path, "cas", digest[:2], digest[2:])
    with open(blob, "r+b") as f:
        f.write(b"\0" if data[0] else b"\1")
    s = Store(path)
    with pytest.raises(CorruptBlob):
        s.restore_file(digest, str(tmp_path / "again.bin"), None, stamps)
    assert not (tmp_path / "again.bin").exists()
    s.close()


def test_a_killed_runs_marker_is_swept_with_its_temp_files(tmp_path: Path) -> None:
    from zenbuild.store.outputs import sweep_store_tmp

    store = Store(str(tmp_path / "st"))
    target = make_target(store.path)
    name = os.path.basename(target.marker)
    assert name.startswith(f"{os.getpid()}-")  # named like a temp file: PID-...
    assert sweep_store_tmp(store.tmp) == 0  # this process is alive: kept
    dead = 2**22 + 12345  # above Linux's default pid_max (4,194,304 = 2**22): never a live pid
    os.rename(target.marker, os.path.join(store.tmp, f"{dead}-{name.split('-', 1)[1]}"))
    assert sweep_store_tmp(store.tmp) == 1
    assert os.listdir(store.tmp) == []
    store.close()


def test_a_blobs_stamp_goes_with_it(tmp_path: Path) -> None:
    import sqlite3
    import time

    from zenbuild.store.blobs import STAMP_PREFIX

    path = str(tmp_path / "st")
    store = Store(path)
    digests = [store.put_value(encode_value(np.full(1 << 18, float(i))).parts) for i in range(3)]
    store.close()

    def stamps_saved() -> list:
        db = sqlite3.connect(os.path.join(path, "zenbuild.db"))
        try:
            return sorted(r[0] for r in db.execute("SELECT path FROM files"))
        finally:
            db.close()

    stamps = StatCache(clock=lambda: time.time_ns() + 10**10)
    s = Store(path)
    for d in digests:
        s.map_blob(d, stamps)
    with s.transaction():
        s.save_file_records(stamps.dirty)
    s.close()
    assert stamps_saved() == sorted(STAMP_PREFIX + d for d in digests)
    s = Store(path)
    with s.transaction():
        assert s.delete_blob(digests[0])
    s.close()
    assert stamps_saved() == sorted(STAMP_PREFIX + d for d in digests[1:])
    s = Store(path)
    with s.transaction():
        s.clear_blobs()
    s.close()
    assert stamps_saved() == []


def test_a_long_runs_marker_is_kept_fresh_and_made_again(tmp_path: Path) -> None:
    """cache gc sweeps STORE/tmp files older than an hour: a run that outlives that (a watch
    session's executor) touches its marker, and makes it again when gc took it, so its
    workers keep writing large values into the store instead of sending them back."""
    from zenbuild.executors import Task
    from zenbuild.executors.worker_store import MARKER_TOUCH_S, Sending

    store = Store(str(tmp_path / "st"))
    clock = [1000.0]
    sending = Sending(store.path, clock=lambda: clock[0])
    task = Task("s", len, (np.zeros(3),), {})
    sending.pack(task)
    assert sending.target is not None
    marker = sending.target.marker
    os.utime(marker, (1.0, 1.0))  # as if an hour old
    clock[0] += MARKER_TOUCH_S / 2
    sending.pack(task)
    assert os.stat(marker).st_mtime == 1.0  # not touched more than once a minute
    clock[0] += MARKER_TOUCH_S
    sending.pack(task)
    assert os.stat(marker).st_mtime > 1.0  # touched: gc keeps it
    os.unlink(marker)  # gc took it anyway (the run was idle for an hour)
    clock[0] += MARKER_TOUCH_S
    sending.pack(task)
    assert os.path.exists(marker)
    assert isinstance(store_value(np.ones(1 << 18), sending.target), StoredValue)
    sending.close()
    assert not os.path.exists(marker)
    store.close()


class Locked:  # does not pickle: its registered reducer is the only way across the pipe
    def __init__(self, name: str) -> None:
        import threading

        self.name = name
        self.lock = threading.Lock()


class Doubling:  # pickles as itself; its registered reducer normalizes (doubles) n
    def __init__(self, n: int) -> None:
        self.n = n


def _reduce_locked(x: Locked) -> object:
    return (Locked, (x.name,))


def _reduce_doubling(x: Doubling) -> object:
    return (Doubling, (2 * x.n,))


def test_the_pipe_uses_a_projects_reducer_only_for_what_does_not_pickle_without_it(
        monkeypatch) -> None:
    """A project reducer gives the stored form, which a serial run's consumer gets once: the
    pipe applies it only where plain pickling fails (a native handle), never a second time
    to an argument the main process already holds in stored form."""
    from zenbuild.executors import pipe
    from zenbuild.executors.worker_store import pack_args, unpack_args
    from zenbuild.serialize.pickler import REDUCERS

    monkeypatch.setitem(REDUCERS, Locked, _reduce_locked)
    monkeypatch.setitem(REDUCERS, Doubling, _reduce_doubling)
    (back,), _ = unpack_args(pack_args((Locked("ix"),), {}))
    assert isinstance(back, Locked) and back.name == "ix"
    assert pipe.loads(pipe.dumps([Locked("v")]))[0].name == "v"
    (same,), _ = unpack_args(pack_args((Doubling(3),), {}))
    assert same.n == 3 and pipe.loads(pipe.dumps(Doubling(3))).n == 3
    # both in one value: it does not pickle as it is, so it goes as the store writes it
    (locked, doubled), _ = unpack_args(pack_args((Locked("a"), Doubling(3)), {}))
    assert locked.name == "a" and doubled.n == 6
