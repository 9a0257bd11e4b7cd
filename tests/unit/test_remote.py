"""Unit: the remote cache's key scheme, options, entry checks and failure handling, over an
in-memory transport (the real nginx is in tests/e2e/test_remote_cache.py)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from zenbuild.errors import ConfigError
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.remote import (
    AC_NAMESPACE,
    HttpCache,
    RemoteCache,
    RemoteRefused,
    RemoteUnavailable,
    _safe_rel,
    ac_key,
    open_remote,
    parse_header,
    redact,
    upload_default,
)


class FakeHttp:
    """A dict standing in for the server; ``fail`` makes every request raise."""

    display = "http://fake/cache"

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.fail: Optional[Exception] = None
        self.requests: List[str] = []

    def _check(self, what: str) -> None:
        self.requests.append(what)
        if self.fail is not None:
            raise self.fail

    def get(self, kind: str, key: str) -> Optional[bytes]:
        self._check(f"GET {kind}")
        return self.files.get(f"{kind}/{key}")

    def get_to(self, kind: str, key: str, out: Any, hashers: List[Any]) -> Optional[int]:
        data = self.get(kind, key)
        if data is None:
            return None
        for h in hashers:
            h.update(data)
        out.write(data)
        return len(data)

    def head(self, kind: str, key: str) -> bool:
        self._check(f"HEAD {kind}")
        return f"{kind}/{key}" in self.files

    def put(self, kind: str, key: str, body: Any, length: int) -> None:
        self._check(f"PUT {kind}")
        self.files[f"{kind}/{key}"] = body if isinstance(body, bytes) else body.read()

    def close(self) -> None:
        pass


@pytest.fixture
def stores(tmp_path: Path) -> Any:
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    yield a, b
    a.close()
    b.close()


def _entry(store: Store) -> ActionEntry:
    value = store.put_blob(b"the value")
    f1 = store.put_blob(b"file one")
    manifest = store.put_blob(json.dumps({"files": [["x.txt", f1, 8, False]]}).encode())
    out = store.put_blob(b"out file")
    return ActionEntry("f" * 32, "pipe", "step1", value,
                       {"build/out.txt": {"kind": "file", "digest": out, "size": 8},
                        "build/dir": {"kind": "dir", "digest": manifest, "size": 8}},
                       {"code": {}}, duration=1.5)


def test_keys_are_sha256_and_namespaced_by_version() -> None:
    assert ac_key("ab") == hashlib.sha256(AC_NAMESPACE + b"ab").hexdigest()
    assert len(ac_key("ab")) == 64 and ac_key("ab") != ac_key("ac")
    assert AC_NAMESPACE.startswith(b"zenbuild-ac-v1")


def test_upload_default_follows_ci() -> None:
    assert upload_default({}) is False
    assert upload_default({"CI": ""}) is False and upload_default({"CI": "false"}) is False
    assert upload_default({"CI": "true"}) is True and upload_default({"CI": "1"}) is True


def test_redact_and_header_parsing_never_show_secrets() -> None:
    assert redact("http://user:pw@host:8080/c") == "http://host:8080/c"
    assert parse_header("H", {"H": "Authorization: Bearer xyz"}) == ("Authorization", "Bearer xyz")
    assert parse_header("H", {}) is None
    with pytest.raises(ConfigError) as e:
        parse_header("H", {"H": "no-colon-secret"})
    assert "no-colon-secret" not in str(e.value)
    with pytest.raises(ConfigError):
        HttpCache("ftp://host/x")
    basic = HttpCache("http://u:p%40ss@host/x")
    assert basic.headers["Authorization"] == "Basic dTpwQHNz" and basic.display == "http://host/x"


def test_safe_paths() -> None:
    assert _safe_rel("build/out.txt")
    for bad in ("/etc/passwd", "../x", "a/../../x", "", ".", "a//b", "a\\b"):
        assert not _safe_rel(bad), bad


def test_round_trip_copies_entry_and_every_blob(stores: Any) -> None:
    a, b = stores
    http = FakeHttp()
    warnings: List[str] = []
    entry = _entry(a)
    RemoteCache(http, a, warnings.append, upload=True).upload(entry)
    assert sum(k.startswith("cas/") for k in http.files) == 4
    assert http.requests[-1] == "PUT ac"  # the entry goes last
    rc = RemoteCache(http, b, warnings.append)
    got = rc.fetch(entry.fingerprint)
    assert got is not None and got.value_digest == entry.value_digest
    assert b.get_action(entry.fingerprint) is not None
    for digest in (entry.value_digest, *(r["digest"] for r in entry.outputs.values())):
        assert b.get_blob(digest) == a.get_blob(digest)
    assert warnings == [] and rc.hits == 1
    assert rc.fetch("0" * 32) is None and rc.misses == 1


def test_upload_skips_blobs_the_server_has(stores: Any) -> None:
    a, _ = stores
    http = FakeHttp()
    entry = _entry(a)
    RemoteCache(http, a, print, upload=True).upload(entry)
    http.requests.clear()
    RemoteCache(http, a, print, upload=True).upload(entry)
    assert "PUT cas" not in http.requests and http.requests.count("HEAD cas") == 4


def test_corrupt_blob_is_a_miss_with_a_warning_and_is_reuploaded(stores: Any) -> None:
    a, b = stores
    http = FakeHttp()
    entry = _entry(a)
    RemoteCache(http, a, print, upload=True).upload(entry)
    doc = json.loads(http.files[f"ac/{ac_key(entry.fingerprint)}"])
    sha = doc["blobs"][entry.value_digest][0]
    http.files[f"cas/{sha}"] = b"the valuE"
    warnings: List[str] = []
    rc = RemoteCache(http, b, warnings.append, upload=True)
    assert rc.fetch(entry.fingerprint) is None
    assert len(warnings) == 1 and "does not match its digest" in warnings[0]
    assert not b.has_blob(entry.value_digest) and b.get_action(entry.fingerprint) is None
    rc.upload(entry if b.has_blob(entry.value_digest) else _entry(b))
    assert http.files[f"cas/{sha}"] == b"the value"  # overwritten, although HEAD said present


@pytest.mark.parametrize("mutate,warns", [
    (lambda d: d.update(version=2), False),  # a newer client's entry: a plain miss
    (lambda d: d.update(fingerprint="0" * 32), True),
    (lambda d: d["outputs"].update({"../../etc/x": {"kind": "file", "digest": "0", "size": 1}}), True),
    (lambda d: d["blobs"].clear(), True),
])
def test_bad_entries_are_misses(stores: Any, mutate: Any, warns: bool) -> None:
    a, b = stores
    http = FakeHttp()
    entry = _entry(a)
    RemoteCache(http, a, print, upload=True).upload(entry)
    key = f"ac/{ac_key(entry.fingerprint)}"
    doc = json.loads(http.files[key])
    mutate(doc)
    http.files[key] = json.dumps(doc).encode()
    warnings: List[str] = []
    assert RemoteCache(http, b, warnings.append).fetch(entry.fingerprint) is None
    assert bool(warnings) == warns
    assert b.get_action(entry.fingerprint) is None


def test_unavailable_remote_warns_once_and_turns_off(stores: Any) -> None:
    a, _ = stores
    http = FakeHttp()
    http.fail = RemoteUnavailable("HTTP 503 Service Unavailable")
    warnings: List[str] = []
    rc = RemoteCache(http, a, warnings.append, upload=True)
    assert rc.fetch("1" * 32) is None
    assert rc.fetch("2" * 32) is None
    rc.upload(_entry(a))
    assert len(warnings) == 1 and "503" in warnings[0] and "local store only" in warnings[0]
    assert len(http.requests) == 1  # nothing more was tried


def test_refused_upload_keeps_reading(stores: Any) -> None:
    a, _ = stores
    http = FakeHttp()
    warnings: List[str] = []
    rc = RemoteCache(http, a, warnings.append, upload=True)
    http.fail = RemoteRefused(405, "Not Allowed")
    rc.upload(_entry(a))
    rc.upload(_entry(a))
    assert len(warnings) == 1 and "refused an upload" in warnings[0]
    http.fail = None
    assert rc.enabled and rc.fetch("3" * 32) is None


def test_open_remote_precedence(stores: Any) -> None:
    a, _ = stores
    assert open_remote({}, a, print) is None
    assert open_remote({"remote": "http://h/c"}, a, print, url="") is None
    rc = open_remote({"remote": "http://h/c"}, a, print, environ={"CI": "1"})
    assert rc is not None and rc.upload_enabled
    rc = open_remote({"remote": "http://h/c", "upload": False}, a, print, environ={"CI": "1"})
    assert rc is not None and not rc.upload_enabled
    rc = open_remote({"remote": "http://h/c", "timeout_s": 2}, a, print, upload=True, environ={})
    assert rc is not None and rc.upload_enabled and rc.http.timeout == 2.0
    warnings: List[str] = []
    rc = open_remote({"remote": "http://h/c", "header_env": "ZB_H"}, a, warnings.append, environ={})
    assert rc is not None and "ZB_H, which is not set" in warnings[0]


def test_http_cache_against_nothing_listening() -> None:
    import socket

    # the port stays bound (not listening) throughout, so no other process can start
    # listening on it between choosing it and connecting, as it could were it closed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http = HttpCache(f"http://127.0.0.1:{s.getsockname()[1]}/c", timeout=1)
        with pytest.raises(RemoteUnavailable, match="Connection refused"):
            http.get("ac", "k")
        with pytest.raises(RemoteUnavailable):
            http.put("cas", "k", io.BytesIO(b"x"), 1)


def test_a_server_that_never_answers_times_out() -> None:
    import socket

    with socket.socket() as srv:  # accepts connections (the kernel does), never replies
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        http = HttpCache(f"http://127.0.0.1:{srv.getsockname()[1]}/c", timeout=0.3)
        with pytest.raises(RemoteUnavailable, match="no answer within 0.3s"):
            http.get("ac", "k")
        http.close()
