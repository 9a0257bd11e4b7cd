"""The remote cache: Bazel's HTTP cache protocol behind the local store.

Remote layout, format version 1 (described in docs/remote-cache.md):
  URL/cas/SHA256   a blob, named by the SHA-256 of its bytes (as Bazel names its blobs, so the
                   same server can hold Bazel's and zenbuild's entries and dedupe them)
  URL/ac/KEY       KEY = sha256(b"zenbuild-ac-v1\\0" + fingerprint); the body is a JSON action
                   entry {"format": "zenbuild-ac", "version": 1, "fingerprint", "pipeline",
                   "step", "value_digest", "outputs", "components", "duration",
                   "blobs": {xxh3 digest: [sha256, size]}} naming every blob the entry needs
                   (the value, each output file, each folder manifest and the files it lists),
                   and "discovered" (what the step touched while it ran, discovered.py) when
                   there is something to verify: a fetched entry is verified before it is served.
A client uploads every blob before the entry, so an entry never names a blob that was not
sent. A downloaded blob is checked against both its SHA-256 and its xxh3 digest before it goes
into the local store; a mismatch is a miss with a warning. Any transport problem (refused,
timeout, 5xx) turns the remote off for the rest of the run with one warning.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import posixpath
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import xxhash

from zenbuild.digest import CHUNK, hash_stream
from zenbuild.errors import ConfigError, CorruptBlob
from zenbuild.store.db import ActionEntry, Store

REMOTE_FORMAT = "zenbuild-ac"
REMOTE_VERSION = 1
AC_NAMESPACE = b"zenbuild-ac-v1\0"
DEFAULT_TIMEOUT_S = 5.0


def ac_key(fingerprint: str) -> str:
    """The remote action-cache key of a fingerprint (SHA-256 hex, versioned by its namespace)."""
    return hashlib.sha256(AC_NAMESPACE + fingerprint.encode()).hexdigest()


def upload_default(env: Optional[Dict[str, str]] = None) -> bool:
    """Upload by default only on CI: when ``CI`` is set to anything but "", "0" or "false"."""
    value = (env if env is not None else os.environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


class RemoteUnavailable(Exception):
    """The remote could not be reached or answered with a server error."""


class RemoteRefused(Exception):
    """The remote answered a request with a client error other than 404 (401, 403, 405, 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status


def redact(url: str) -> str:
    """The URL without any user:password part, for messages."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def parse_header(env_name: str, environ: Optional[Dict[str, str]] = None) -> Optional[Tuple[str, str]]:
    """Read "NAME: VALUE" from the environment variable ``env_name``; None when it is unset.
    The value is never put into an error message."""
    raw = (environ if environ is not None else os.environ).get(env_name)
    if raw is None:
        return None
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value:
        raise ConfigError(
            f"the environment variable {env_name} (named by [cache] header_env) must hold one "
            "HTTP header as NAME: VALUE, for example 'Authorization: Bearer TOKEN'. Fix its value."
        )
    return name.strip(), value.strip()


class HttpCache:
    """GET/HEAD/PUT of URL/ac/KEY and URL/cas/KEY over keep-alive HTTP/1.1 connections."""

    def __init__(self, url: str, headers: Optional[Dict[str, str]] = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        p = urllib.parse.urlsplit(url)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ConfigError(
                f"remote cache {redact(url)!r} is not an http:// or https:// URL. Pass one as "
                "--remote-cache http://HOST:PORT/PREFIX or set [cache] remote in zenbuild.toml."
            )
        self.scheme = p.scheme
        self.host = p.hostname
        self.port = p.port
        self.prefix = p.path.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        if p.username is not None:
            cred = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
            self.headers.setdefault("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
        self.display = redact(url)
        self._local = threading.local()

    def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def path(self, kind: str, key: str) -> str:
        return f"{self.prefix}/{kind}/{key}"

    def request(self, method: str, kind: str, key: str, body: Any = None,
                length: Optional[int] = None) -> http.client.HTTPResponse:
        """Send one request; returns the response (body unread) for 2xx and 404, raises
        RemoteUnavailable for transport errors and 5xx, RemoteRefused for other answers."""
        headers = dict(self.headers)
        if length is not None:
            headers["Content-Length"] = str(length)
        for attempt in (0, 1):
            conn = self._conn(fresh=attempt == 1)
            reused = getattr(conn, "sock", None) is not None
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, self.path(kind, key), body=body, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed a keep-alive connection: retry once, fresh
                raise RemoteUnavailable(f"{type(e).__name__}: {e}") from None
            except TimeoutError:
                self.close()
                raise RemoteUnavailable(f"no answer within {self.timeout:g}s") from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise RemoteUnavailable(getattr(e, "strerror", None) or f"{type(e).__name__}: {e}") from None
            if resp.status >= 500:
                resp.read()
                raise RemoteUnavailable(f"HTTP {resp.status} {resp.reason}")
            if resp.status != 404 and not 200 <= resp.status < 300:
                resp.read()
                raise RemoteRefused(resp.status, resp.reason)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, kind: str, key: str) -> Optional[bytes]:
        resp = self.request("GET", kind, key)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise RemoteUnavailable(f"reading the answer failed: {type(e).__name__}") from None
        return None if resp.status == 404 else data

    def get_to(self, kind: str, key: str, out: Any, hashers: List[Any]) -> Optional[int]:
        """Stream the body into ``out`` feeding ``hashers``; the byte count, or None on 404."""
        resp = self.request("GET", kind, key)
        if resp.status == 404:
            resp.read()
            return None
        n = 0
        try:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                for h in hashers:
                    h.update(chunk)
                out.write(chunk)
                n += len(chunk)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise RemoteUnavailable(f"reading the answer failed: {type(e).__name__}") from None
        return n

    def head(self, kind: str, key: str) -> bool:
        resp = self.request("HEAD", kind, key)
        resp.read()
        return resp.status != 404

    def put(self, kind: str, key: str, body: Any, length: int) -> None:
        resp = self.request("PUT", kind, key, body=body, length=length)
        resp.read()
        if resp.status == 404:
            raise RemoteRefused(404, "Not Found (does the server accept PUT?)")


def _safe_rel(rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    norm = posixpath.normpath(rel)
    return norm == rel and norm != "." and not norm.startswith("../") and norm != ".."


class RemoteCache:
    """The local store's remote tier: ``fetch`` copies a remote entry (and every blob it needs)
    into the local store; ``upload`` sends a local entry. Problems become warnings, never errors."""

    def __init__(
        self,
        http: HttpCache,
        store: Store,
        warn: Callable[[str], None],
        upload: bool = False,
    ) -> None:
        self.http = http
        self.store = store
        self.warn = warn
        self.upload_enabled = upload
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self.uploaded = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self._bad: Set[str] = set()  # sha256 keys the server served corrupt: overwrite them
        self._sha: Dict[str, Tuple[str, int]] = {}

    # -- failure handling -------------------------------------------------------------------
    def _down(self, why: str) -> None:
        if self.enabled:
            self.enabled = False
            self.warn(f"remote cache {self.http.display} is unavailable ({why}); continuing "
                      "with the local store only for the rest of this run")

    def _refused_read(self, e: RemoteRefused) -> None:
        hint = " (check [cache] header_env and its environment variable)" if e.status in (401, 403) else ""
        self._down(f"it answered {e}{hint}")

    def _refused_write(self, e: RemoteRefused) -> None:
        if self.upload_enabled:
            self.upload_enabled = False
            hint = " (check [cache] header_env and its environment variable)" if e.status in (401, 403) else ""
            self.warn(f"remote cache {self.http.display} refused an upload ({e}){hint}; "
                      "not uploading for the rest of this run")

    # -- reading ----------------------------------------------------------------------------
    def fetch(self, fingerprint: str) -> Optional[ActionEntry]:
        """The remote entry for ``fingerprint``, copied with all its blobs into the local store;
        None on a miss, a bad entry or a bad blob (the last two with a warning)."""
        if not self.enabled:
            return None
        try:
            raw = self.http.get("ac", ac_key(fingerprint))
            if raw is None:
                self.misses += 1
                return None
            entry, blobs = self._parse(raw, fingerprint)
            if entry is None:
                self.misses += 1
                return None
            for digest, (sha, size) in sorted(blobs.items()):
                if not self.store.has_blob(digest) and not self._download(digest, sha, size, entry.step):
                    self.misses += 1
                    return None
            if not self._manifests_complete(entry, blobs):
                self.misses += 1
                return None
        except RemoteUnavailable as e:
            self._down(str(e))
            return None
        except RemoteRefused as e:
            self._refused_read(e)
            return None
        now = time.time()
        entry.created = entry.last_used = now
        self.store.put_action(entry)
        self.hits += 1
        return entry

    def _parse(self, raw: bytes, fingerprint: str) -> Tuple[Optional[ActionEntry], Dict[str, Tuple[str, int]]]:
        try:
            doc = json.loads(raw)
            if doc.get("format") != REMOTE_FORMAT or doc.get("version") != REMOTE_VERSION:
                return None, {}  # another tool's or another version's entry: a plain miss
            if doc["fingerprint"] != fingerprint:
                raise ValueError("it names another fingerprint")
            blobs = {str(d): (str(v[0]), int(v[1])) for d, v in doc["blobs"].items()}
            outputs = doc["outputs"]
            needed = {doc["value_digest"]} | {rec["digest"] for rec in outputs.values()}
            if not needed <= set(blobs) or not all(_safe_rel(r) for r in outputs):
                raise ValueError("it is incomplete or names an unsafe output path")
            discovered = doc.get("discovered")
            if discovered is not None and not isinstance(discovered, dict):
                raise ValueError("its discovered record is not an object")
            entry = ActionEntry(
                fingerprint, str(doc["pipeline"]), str(doc["step"]), str(doc["value_digest"]),
                outputs, dict(doc["components"]), duration=float(doc.get("duration", 0.0)),
                discovered=discovered,
            )
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            self.warn(f"remote cache entry ac/{ac_key(fingerprint)} is unreadable ({e}); "
                      "treating it as a miss")
            return None, {}
        return entry, blobs

    def _download(self, digest: str, sha: str, size: int, step: str) -> bool:
        sha_h = hashlib.sha256()
        xx_h = xxhash.xxh3_128()
        tmp = os.path.join(self.store.tmp, f"remote-{os.getpid()}-{threading.get_ident()}-{digest}")
        try:
            with open(tmp, "wb") as out:
                n = self.http.get_to("cas", sha, out, [sha_h, xx_h])
            if n is None:
                return False  # the entry names a blob the server no longer has: a plain miss
            if sha_h.hexdigest() != sha or xx_h.hexdigest() != digest or n != size:
                self._bad.add(sha)
                self.warn(f"remote cache blob cas/{sha} (for step {step}) does not match its "
                          "digest; treating it as a miss and computing the step here")
                return False
            got, _ = self.store.put_file(tmp)
            if got != digest:  # pragma: no cover - the file changed under us
                return False
            self.bytes_down += n
            return True
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _manifests_complete(self, entry: ActionEntry, blobs: Dict[str, Tuple[str, int]]) -> bool:
        for rel, rec in entry.outputs.items():
            if rec.get("kind") != "dir":
                continue
            try:
                files = json.loads(self.store.get_blob(rec["digest"]))["files"]
                ok = all(_safe_rel(f[0]) and f[1] in blobs for f in files)
            except (KeyError, ValueError, TypeError, IndexError):
                ok = False
            if not ok:
                self.warn(f"remote cache entry for step {entry.step}: the manifest of output "
                          f"{rel} is incomplete or unsafe; treating it as a miss")
                return False
        return True

    # -- writing ----------------------------------------------------------------------------
    def _blobs_of(self, entry: ActionEntry) -> List[str]:
        digests = [entry.value_digest]
        for rec in entry.outputs.values():
            digests.append(rec["digest"])
            if rec.get("kind") == "dir":
                digests.extend(f[1] for f in json.loads(self.store.get_blob(rec["digest"]))["files"])
        return list(dict.fromkeys(digests))

    def _sha_of(self, digest: str) -> Tuple[str, int]:
        if digest not in self._sha:
            h = hashlib.sha256()
            with self.store.open_blob(digest) as f:
                n = hash_stream(f, h)
            self._sha[digest] = (h.hexdigest(), n)
        return self._sha[digest]

    def upload(self, entry: ActionEntry) -> None:
        """Send ``entry``'s blobs (those the server lacks), then the entry itself."""
        if not (self.enabled and self.upload_enabled):
            return
        try:
            blobs: Dict[str, List[Any]] = {}
            for digest in self._blobs_of(entry):
                sha, size = self._sha_of(digest)
                blobs[digest] = [sha, size]
                if sha in self._bad or not self.http.head("cas", sha):
                    with self.store.open_blob(digest) as f:
                        self.http.put("cas", sha, f, size)
                    self._bad.discard(sha)
                    self.bytes_up += size
            doc = {
                "format": REMOTE_FORMAT,
                "version": REMOTE_VERSION,
                "fingerprint": entry.fingerprint,
                "pipeline": entry.pipeline,
                "step": entry.step,
                "value_digest": entry.value_digest,
                "outputs": entry.outputs,
                "components": entry.components,
                "duration": entry.duration,
                "blobs": blobs,
            }
            if entry.discovered is not None:  # verified by the client before it serves it
                doc["discovered"] = entry.discovered
            body = json.dumps(doc, sort_keys=True).encode()
            self.http.put("ac", ac_key(entry.fingerprint), body, len(body))
            self.uploaded += 1
        except RemoteUnavailable as e:
            self._down(str(e))
        except RemoteRefused as e:
            self._refused_write(e)
        except (OSError, KeyError, ValueError, CorruptBlob) as e:
            self.warn(f"could not upload step {entry.step} to the remote cache: {e}")

    def summary(self) -> str:
        parts = [f"{self.hits} fetched", f"{self.misses} missed"]
        if self.upload_enabled or self.uploaded:
            parts.append(f"{self.uploaded} uploaded")
        return (f"remote cache {self.http.display}: {', '.join(parts)} "
                f"({self.bytes_down / 1e6:.1f} MB down, {self.bytes_up / 1e6:.1f} MB up)")

    def close(self, reporter: Any = None) -> None:
        """Close the connection; print the summary line through ``reporter`` if it prints lines."""
        line = getattr(reporter, "line", None)
        if line is not None and (self.hits or self.misses or self.uploaded):
            line(self.summary())
        self.http.close()


def open_remote(
    config_cache: Dict[str, Any],
    store: Store,
    warn: Callable[[str], None],
    url: Optional[str] = None,
    upload: Optional[bool] = None,
    environ: Optional[Dict[str, str]] = None,
) -> Optional[RemoteCache]:
    """The remote cache the options and ``[cache]`` ask for, or None. ``url``/``upload`` given on
    the command line win over the config; an empty ``url`` turns the remote off."""
    env = environ if environ is not None else dict(os.environ)
    url = url if url is not None else config_cache.get("remote")
    if not url:
        return None
    if upload is None:
        upload = config_cache.get("upload")
    if upload is None:
        upload = upload_default(env)
    headers: Dict[str, str] = {}
    header_env = config_cache.get("header_env")
    if header_env:
        parsed = parse_header(header_env, env)
        if parsed is None:
            warn(f"[cache] header_env names {header_env}, which is not set; using the remote "
                 "cache without that header")
        else:
            headers[parsed[0]] = parsed[1]
    timeout = float(config_cache.get("timeout_s", DEFAULT_TIMEOUT_S))
    return RemoteCache(HttpCache(url, headers, timeout), store, warn, upload=bool(upload))
