"""End-to-end: a hostile remote cache server (a Python http.server in this process, serving a
folder as nginx would, with answers the tests rewrite) against the real CLI. Answers without
end, too long, too slow, too deep, blobs claiming a terabyte, names no file system can hold,
world-writable modes: each is a miss or turns the remote off with one warning, the run goes on
locally (exit 0), memory and disk stay bounded."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from tests.e2e.test_remote_cache import STEPS, Checkout, checkout, remote_warnings
from tests.e2e.test_remote_security import keygen
from zenbuild.store.db import Store
from zenbuild.store.signing import ac_key

Hook = Callable[[http.server.BaseHTTPRequestHandler], None]


class Cache:
    """GET/HEAD/PUT of a folder, as a Bazel HTTP cache; ``hooks[path]`` answers that path
    instead. ``sent``: bytes the hooks wrote; ``gets``: paths asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hooks: Dict[str, Hook] = {}
        self.sent = 0
        self.gets: List[str] = []
        self.hung_up = threading.Event()  # a hook's client closed the connection
        cache = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _file(self) -> Path:
                return cache.root / self.path.lstrip("/")

            def do_HEAD(self) -> None:
                p = self._file()
                self.send_response(200 if p.is_file() else 404)
                self.send_header("Content-Length", str(p.stat().st_size if p.is_file() else 0))
                self.end_headers()

            def do_GET(self) -> None:
                cache.gets.append(self.path)
                hook = cache.hooks.get(self.path)
                if hook is not None:
                    try:
                        hook(self)
                    except OSError:
                        cache.hung_up.set()
                    self.close_connection = True
                    return
                p = self._file()
                data = p.read_bytes() if p.is_file() else b""
                self.send_response(200 if p.is_file() else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                p = self._file()
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/cache"

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(10)

    def entry_path(self, step: str, signer: Optional[str] = None) -> str:
        for p in sorted((self.root / "cache" / "ac").iterdir()):
            doc = json.loads(p.read_text())
            if doc["step"] == step and p.name == ac_key(doc["fingerprint"], signer):
                return f"/cache/ac/{p.name}"
        raise AssertionError(f"no entry of {step}")

    def doc(self, path: str) -> Dict[str, Any]:
        return dict(json.loads((self.root / path.lstrip("/")).read_text()))

    def put(self, path: str, doc: Dict[str, Any]) -> None:
        (self.root / path.lstrip("/")).write_text(json.dumps(doc))

    def put_blob(self, data: bytes) -> List[Any]:
        import hashlib

        import xxhash

        sha = hashlib.sha256(data).hexdigest()
        (self.root / "cache" / "cas" / sha).write_bytes(data)
        return [xxhash.xxh3_128_hexdigest(data), sha, len(data)]

    def endless(self, path: str, length: Optional[int], pause: float = 0.0, chunk: int = 1 << 20
                ) -> None:
        """``path`` answers 200 and bytes without end (``length``: the Content-Length said;
        None: none, the connection closes at the end), ``chunk`` bytes every ``pause`` s."""

        def hook(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            if length is not None:
                h.send_header("Content-Length", str(length))
            else:
                h.send_header("Connection", "close")
            h.end_headers()
            block = b"[" * chunk
            while not self.hung_up.is_set():
                h.wfile.write(block)
                h.wfile.flush()
                self.sent += len(block)
                if pause:
                    time.sleep(pause)  # the trickle's pace, not a wait for an event

        self.hooks[path] = hook


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Cache]:
    c = Cache(tmp_path / "srv")
    yield c
    c.hung_up.set()
    c.stop()


def filled(tmp_path: Path, cache: Cache) -> None:
    """A writer that uploaded every step's entry to ``cache``."""
    w = checkout(tmp_path / "writer")
    r = w.run("run", "--remote-cache", cache.url, "--remote-cache-upload")
    assert sorted(r.executed) == sorted(STEPS) and not remote_warnings(r.output), r


def reader(tmp_path: Path, cache: Cache, extra: str = "") -> Checkout:
    return checkout(tmp_path / "reader", f'[cache]\nremote = "{cache.url}"\nupload = false\n{extra}')


@pytest.mark.parametrize("how", ["length", "endless", "trickle", "trusted"])
def test_an_entry_answer_without_end_turns_the_remote_off(tmp_path: Path, cache: Cache,
                                                          how: str) -> None:
    extra = "timeout_s = 0.5\n"
    writer_env: Dict[str, str] = {}
    key_id: Optional[str] = None
    if how == "trusted":  # the read is bounded before any signature is checked
        key_id = keygen(tmp_path / "keys" / "key")
        extra += f'trusted_keys = ["{key_id}"]\n'
        writer_env["ZENBUILD_SIGNING_KEY_FILE"] = str(tmp_path / "keys" / "key")
    w = checkout(tmp_path / "writer")
    w.run("run", "--remote-cache", cache.url, "--remote-cache-upload", env=writer_env)
    path = cache.entry_path("load", key_id)
    if how == "trickle":  # 64 bytes every 50 ms, under the cap: only a deadline ends it
        cache.endless(path, 10**6, pause=0.05, chunk=64)
    else:
        cache.endless(path, 10**12 if how in ("length", "trusted") else None)
    r = reader(tmp_path, cache, extra).run("run", timeout=60)
    assert r.returncode == 0 and sorted(r.executed) == sorted(STEPS), r
    said = remote_warnings(r.output)
    assert len(said) == 1 and "unavailable" in said[0], r
    assert ("deadline" if how == "trickle" else "an entry may have") in said[0], said
    assert "Traceback" not in r.output and "MemoryError" not in r.output
    assert cache.sent < 64 << 20, cache.sent  # cut off early, never read whole


def _claim(cache: Cache, step: str, size: int) -> str:
    """Make ``step``'s unsigned entry name a value blob of ``size`` bytes (the server streams
    it without end); returns the blob's path."""
    path = cache.entry_path(step)
    doc = cache.doc(path)
    sha = "ab" * 32
    doc["blobs"] = {doc["value_digest"]: [sha, size]}
    cache.put(path, doc)
    cache.endless(f"/cache/cas/{sha}", None)
    return f"/cache/cas/{sha}"


@pytest.mark.parametrize("size,setting,why", [
    (10**15, "", "free space of the store's file system"),  # a petabyte: more than any disk
    (10**9, 'max_size = "100MB"\n', "more than [cache] max_size"),
])
def test_a_blob_claiming_more_than_the_store_may_hold_is_refused_unread(
        tmp_path: Path, cache: Cache, size: int, setting: str, why: str) -> None:
    filled(tmp_path, cache)
    blob = _claim(cache, "load", size)
    rd = reader(tmp_path, cache, setting)
    r = rd.run("run", timeout=60)
    assert r.returncode == 0 and "load" in r.executed, r
    said = [w for w in remote_warnings(r.output) if "ac/" in w and "load" in w]
    assert len(said) == 1 and why in said[0], r
    assert blob not in cache.gets and cache.sent == 0  # never asked for
    assert os.listdir(rd.root / ".zenbuild" / "tmp") == []


def test_a_blob_that_streams_past_its_size_leaves_no_temp_file(tmp_path: Path,
                                                                cache: Cache) -> None:
    filled(tmp_path, cache)
    _claim(cache, "load", 5 << 20)  # fits on disk: streamed, cut at its size, refused
    rd = reader(tmp_path, cache)
    r = rd.run("run", timeout=60)
    assert r.returncode == 0 and "load" in r.executed, r
    assert any("does not match its digest" in w for w in remote_warnings(r.output)), r
    assert os.listdir(rd.root / ".zenbuild" / "tmp") == []
    assert cache.sent < 64 << 20


def test_a_remote_download_temp_file_of_a_killed_reader_is_swept(tmp_path: Path) -> None:
    """The name _download gives its temp file starts with the PID, as sweep_store_tmp wants."""
    from zenbuild.store.outputs import sweep_store_tmp

    seen: List[str] = []

    class Http:
        display = "http://fake/cache"

        def get_to(self, kind: str, key: str, out: Any, hashers: List[Any],
                   limit: Optional[int] = None) -> Optional[int]:
            seen.append(os.path.basename(out.name))
            return None

    from zenbuild.store.remote import RemoteCache

    store = Store(str(tmp_path / "store"))
    try:
        rc = RemoteCache(Http(), store, lambda m: None)  # type: ignore[arg-type]
        assert rc._download("0" * 32, "a" * 64, 10, "s") is False
        assert seen and seen[0].split("-")[0] == str(os.getpid())
        dead = 2**22 + 12345  # above pid_max's default: no such process
        left = Path(store.tmp) / seen[0].replace(str(os.getpid()), str(dead), 1)
        left.write_bytes(b"partial")
        assert sweep_store_tmp(store.tmp) == 1 and not left.exists()
    finally:
        store.close()


@pytest.mark.parametrize("where", ["entry", "manifest"])
def test_deeply_nested_json_from_the_remote_is_a_miss(tmp_path: Path, cache: Cache,
                                                      where: str) -> None:
    filled(tmp_path, cache)
    deep = b"[" * 100000
    if where == "entry":
        (cache.root / cache.entry_path("load").lstrip("/")).write_bytes(deep)
        step = "load"
    else:
        path = cache.entry_path("pages")
        doc = cache.doc(path)
        digest, sha, n = cache.put_blob(deep)
        doc["outputs"]["build/pages"]["digest"] = digest
        doc["blobs"][digest] = [sha, n]
        cache.put(path, doc)
        step = "pages"
    r = reader(tmp_path, cache).run("run", timeout=60)
    assert r.returncode == 0 and r.executed == [step], r
    assert len(remote_warnings(r.output)) == 1, r
    assert "RecursionError" not in r.output and "Traceback" not in r.output


def _manifest_with(cache: Cache, files: List[List[Any]], **more: Any) -> None:
    path = cache.entry_path("pages")
    doc = cache.doc(path)
    manifest: Dict[str, Any] = {"files": [], "format": 2, **more}
    for name, data, mode in files:
        digest, sha, n = cache.put_blob(data)
        manifest["files"].append([name, digest, n, bool(mode & 0o100)])
        if mode is not None and mode not in (0o644, 0o755):
            manifest.setdefault("modes", {})[name] = mode
        doc["blobs"][digest] = [sha, n]
    digest, sha, n = cache.put_blob(json.dumps(manifest).encode())
    doc["outputs"]["build/pages"]["digest"] = digest
    doc["blobs"][digest] = [sha, n]
    cache.put(path, doc)


@pytest.mark.parametrize("name", ["x" * 300, "/".join(["d" * 200] * 25)])
def test_names_no_file_system_can_hold_are_refused(tmp_path: Path, cache: Cache,
                                                   name: str) -> None:
    filled(tmp_path, cache)
    _manifest_with(cache, [[name, b"x", 0o644]])
    rd = reader(tmp_path, cache)
    r = rd.run("run", timeout=60)
    assert r.returncode == 0 and r.executed == ["pages"], r
    said = remote_warnings(r.output)
    assert len(said) == 1 and "unsafe" in said[0], r
    r = rd.run("run", "--remote-cache", "", timeout=60)  # the entry never reached the store
    assert r.returncode == 0 and r.executed == [], r


def test_a_restore_failing_on_this_machine_executes_the_step(tmp_path: Path) -> None:
    """An entry already in the local store whose restore fails (a name too long here): the
    step executes instead, with one warning naming the path and the error, and the next run
    is served from the entry that run made."""
    from zenbuild.store.folders import parse

    p = checkout(tmp_path / "p")
    p.run("run")
    store = Store(str(p.root / ".zenbuild"))
    try:
        fp = next(row[0] for row in store.db.execute("SELECT fingerprint FROM actions")
                  if store.get_action(row[0]).step == "pages")  # type: ignore[union-attr]
        entry = store.get_action(fp)
        assert entry is not None
        m = parse(store.get_blob(entry.outputs["build/pages"]["digest"]))
        m.files.append(["y" * 300, store.put_blob(b"long"), 4, False])
        entry.outputs["build/pages"]["digest"] = store.put_blob(m.encode())
        store.put_action(entry)
    finally:
        store.close()
    import shutil

    shutil.rmtree(p.root / "build" / "pages")
    r = p.run("run", timeout=60)
    assert r.returncode == 0 and r.executed == ["pages"], r
    said = [ln for ln in r.output.splitlines() if "could not restore the outputs of step pages" in ln]
    assert len(said) == 1 and "y" * 50 in said[0] and "too long" in said[0], r
    assert "Traceback" not in r.output
    assert (p.root / "build" / "pages" / "alpha.txt").read_text() == "alpha" * 3
    shutil.rmtree(p.root / "build" / "pages")
    r = p.run("run", timeout=60)
    assert r.returncode == 0 and r.executed == [] and "pages" in r.cached, r


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def test_an_unsigned_entry_cannot_make_world_writable_files(tmp_path: Path, cache: Cache) -> None:
    filled(tmp_path, cache)
    _manifest_with(cache, [["open.txt", b"anyone", 0o777], ["mine.txt", b"me", 0o600]],
                   dirs={"sub": 0o777}, mode=0o777)
    rd = reader(tmp_path, cache)
    r = rd.run("run", timeout=60)
    assert r.returncode == 0 and "pages" in r.cached and not remote_warnings(r.output), r
    mask = _umask() | 0o002
    pages = rd.root / "build" / "pages"
    assert stat.S_IMODE((pages / "open.txt").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((pages / "mine.txt").stat().st_mode) == 0o600  # never widened
    assert stat.S_IMODE((pages / "sub").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(pages.stat().st_mode) == 0o777 & ~mask
    r = rd.run("run", "--remote-cache", "", timeout=60)  # the local copy keeps the masked modes
    assert r.returncode == 0 and r.executed == [] and "Restored" not in r.output, r
