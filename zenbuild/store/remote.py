"""The remote cache: Bazel's HTTP cache protocol behind the local store.

Remote layout, format version 2 (described in docs/remote-cache.md):
  URL/cas/SHA256   a blob, named by the SHA-256 of its bytes (as Bazel names its blobs)
  URL/ac/KEY       KEY = sha256(b"zenbuild-ac-v2\\0" + SIGNER + b"\\0" + fingerprint), SIGNER
                   the writer's public key id ("ed25519:...") or b"unsigned"; the body is a JSON
                   entry {"format": "zenbuild-ac", "version": 2, "fingerprint", "pipeline",
                   "step", "value_digest", "outputs", "components", "duration", "blobs":
                   {xxh3: [sha256, size]}, "discovered"?, "signature"?} (signing.py).
A reader looks only in the namespaces of the keys it trusts (the unsigned one only when no key
is configured), so an untrusted writer can never occupy a key a trusted writer will want. An
entry is used only after its signature (in a signed namespace), its output paths (exactly the
step's declared outputs), its blobs (SHA-256 and xxh3) and, when unsigned, its value's encoding
(no pickle) all check out; else it is a miss with one warning per kind per run. Blobs go up
before the entry. A transport problem turns the remote off for the run with one warning.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import xxhash

from zenbuild.digest import CHUNK, hash_stream, is_digest
from zenbuild.durations import parse_size
from zenbuild.errors import ConfigError, CorruptBlob
from zenbuild.store.db import ActionEntry, Store
from zenbuild.store.folders import masked, untrusted_mask
from zenbuild.store.folders import parse as parse_manifest
from zenbuild.store.signing import (  # noqa: F401 (AC_NAMESPACE: the key scheme)
    AC_NAMESPACE,
    BadSignature,
    Signer,
    ac_key,
    load_signer,
    namespaces,
    needs_unpickling,
    outputs_problem,
    restore_problem,
    trusted_keys,
    verify,
)

REMOTE_FORMAT = "zenbuild-ac"
_SHA256 = re.compile(r"[0-9a-f]{64}")  # a blob's name on the server
REMOTE_VERSION = 2  # 2: entries namespaced by signer, optionally signed (1: one key per fingerprint)
DEFAULT_TIMEOUT_S = 5.0
# An action entry is a few KB (a big folder Output's entry, some hundred KB): an ac/ answer
# longer than this is refused unread, whoever signed it (the signature is checked after the read).
MAX_ENTRY_BYTES = 4 << 20
# Each request must end within DEADLINE_FACTOR x timeout_s (a blob: plus its size at
# MIN_RATE bytes/s), however the server paces its bytes: timeout_s bounds each read only.
DEADLINE_FACTOR = 6
MIN_RATE = 256 << 10
# A download must leave this much free on the store's file system.
DISK_MARGIN = 512 << 20


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

    def deadline(self, size: int = 0) -> float:
        """When (time.monotonic()) a request started now must be over: DEADLINE_FACTOR x the
        timeout, plus ``size`` bytes at MIN_RATE."""
        return time.monotonic() + DEADLINE_FACTOR * self.timeout + size / MIN_RATE

    def _left(self, deadline: float) -> float:
        """Seconds to the ``deadline`` (the socket's timeout is set to at most that);
        RemoteUnavailable once it passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._late(deadline)
        sock = getattr(getattr(self._local, "conn", None), "sock", None)
        if sock is not None:
            sock.settimeout(min(self.timeout, left))
        return left

    def _late(self, deadline: float) -> RemoteUnavailable:
        """The error for a read that timed out (the connection is closed): the deadline's
        when it passed, else timeout_s's."""
        self.close()
        if time.monotonic() >= deadline - 0.01:
            return RemoteUnavailable(f"an answer took longer than its deadline "
                                     f"({DEADLINE_FACTOR} x timeout_s = "
                                     f"{DEADLINE_FACTOR * self.timeout:g}s for an entry)")
        return RemoteUnavailable(f"no answer within {self.timeout:g}s")

    def _read(self, resp: http.client.HTTPResponse, deadline: float, n: int) -> bytes:
        """At most ``n`` bytes of the body, as soon as any arrive (a server trickling bytes
        meets the deadline: read(n) would wait for all n)."""
        self._left(deadline)
        if resp.length == 0:
            return resp.read()  # b"", and the answer is over (read1 would not say so)
        return resp.read1(n)

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
            if reused:
                conn.sock.settimeout(self.timeout)  # _left() may have lowered it
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
                self._drain(resp)
                raise RemoteUnavailable(f"HTTP {resp.status} {resp.reason}")
            if resp.status != 404 and not 200 <= resp.status < 300:
                self._drain(resp)
                raise RemoteRefused(resp.status, resp.reason)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, kind: str, key: str, limit: int = MAX_ENTRY_BYTES) -> Optional[bytes]:
        """The body of ``kind/key`` (None on 404), read within the deadline; RemoteUnavailable
        when it is longer than ``limit`` bytes (said by its Content-Length, or found reading:
        never read past ``limit``) or late."""
        deadline = self.deadline()
        resp = self.request("GET", kind, key)
        if resp.status == 404:
            self._drain(resp, deadline)
            return None
        if resp.length is not None and resp.length > limit:
            self.close()
            raise RemoteUnavailable(f"its answer for {kind}/{key[:16]}... is {resp.length} "
                                    f"bytes long, more than the {limit} an entry may have")
        parts: List[bytes] = []
        n = 0
        try:
            while True:
                chunk = self._read(resp, deadline, min(CHUNK, limit + 1 - n))
                if not chunk:
                    break
                parts.append(chunk)
                n += len(chunk)
                if n > limit:
                    self.close()
                    raise RemoteUnavailable(f"its answer for {kind}/{key[:16]}... is longer "
                                            f"than the {limit} bytes an entry may have")
        except TimeoutError:
            raise self._late(deadline) from None
        except (OSError, http.client.HTTPException, MemoryError) as e:
            self.close()
            raise RemoteUnavailable(f"reading the answer failed: {type(e).__name__}") from None
        return b"".join(parts)

    def get_to(self, kind: str, key: str, out: Any, hashers: List[Any],
               limit: Optional[int] = None) -> Optional[int]:
        """Stream the body into ``out`` feeding ``hashers``; the byte count, or None on 404.
        Past ``limit`` bytes it stops (a server sending more than the entry said is wrong);
        a body said (Content-Length) to be longer is not read at all (its said length is
        returned). The whole answer must come within its deadline (``limit`` bytes at
        MIN_RATE more than an entry's). A failed write to ``out`` raises its OSError."""
        deadline = self.deadline(limit or 0)
        resp = self.request("GET", kind, key)
        if resp.status == 404:
            self._drain(resp, deadline)
            return None
        if limit is not None and resp.length is not None and resp.length > limit:
            self.close()
            return resp.length  # more than the entry said: the caller's size check refuses it
        n = 0
        while True:
            try:
                chunk = self._read(resp, deadline, CHUNK)
            except TimeoutError:
                raise self._late(deadline) from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise RemoteUnavailable(f"reading the answer failed: {type(e).__name__}") from None
            if not chunk:
                break
            for h in hashers:
                h.update(chunk)
            try:
                out.write(chunk)
            except BaseException:
                self.close()  # the rest of this answer is never read
                raise
            n += len(chunk)
            if limit is not None and n > limit:
                self.close()  # the rest of this answer is never read
                break
        return n

    def _drain(self, resp: http.client.HTTPResponse, deadline: Optional[float] = None) -> None:
        """Read a small answer's body (an error page) so that the connection is kept; a body
        said to be (or found) longer than 64 KiB, or slow, closes the connection instead."""
        if resp.length is None or resp.length > 1 << 16:
            self.close()
            return
        deadline = deadline if deadline is not None else self.deadline()
        try:
            while self._read(resp, deadline, 1 << 16):
                pass
        except (RemoteUnavailable, OSError, http.client.HTTPException):
            self.close()

    def head(self, kind: str, key: str) -> bool:
        resp = self.request("HEAD", kind, key)
        resp.read()  # a HEAD answer has no body
        return resp.status != 404

    def put(self, kind: str, key: str, body: Any, length: int) -> None:
        resp = self.request("PUT", kind, key, body=body, length=length)
        self._drain(resp)
        if resp.status == 404:
            raise RemoteRefused(404, "Not Found (does the server accept PUT?)")


class RemoteCache:
    """The local store's remote tier: ``fetch`` copies a remote entry (and every blob it needs)
    into the local store once it passed every check; ``upload`` sends a local entry, signed when
    a signing key is set. Problems become warnings, never errors."""

    def __init__(
        self,
        http: HttpCache,
        store: Store,
        warn: Callable[[str], None],
        upload: bool = False,
        signer: Optional[Signer] = None,
        trusted: Sequence[str] = (),
        max_size: Optional[int] = None,
    ) -> None:
        self.http = http
        self.max_size = max_size  # [cache] max_size: no download of an entry needs more
        self.store = store
        self.warn = warn
        self.upload_enabled = upload
        self.signer = signer
        self.namespaces = namespaces(trusted, signer)  # None: the unsigned namespace
        self.enabled = True
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # entries found but refused (untrusted, unsafe, undecodable unsigned)
        self.uploaded = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self._bad: Set[str] = set()  # sha256 keys the server served corrupt: overwrite them
        self._sha: Dict[str, Tuple[str, int]] = {}
        self._warned: Set[str] = set()

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

    def _reject(self, kind: str, key: str, why: str, what: str) -> None:
        """An entry found but not used: a miss, with one warning per ``kind`` per run."""
        self.rejected += 1
        if kind not in self._warned:
            self._warned.add(kind)
            self.warn(f"remote cache entry ac/{key} {what}: {why}; treating it as a miss and "
                      f"computing the step here (further such entries are misses without a "
                      "warning this run)")

    # -- reading ----------------------------------------------------------------------------
    def fetch(self, fingerprint: str, outputs: Optional[Sequence[str]] = None,
              root: Optional[str] = None) -> Optional[ActionEntry]:
        """The remote entry for ``fingerprint``, copied with all its blobs into the local store;
        None on a miss or a refused entry. ``outputs`` are the step's declared outputs (an
        entry naming any other path is refused), ``root`` the project they are restored into
        (an entry to be written through a symbolic link is refused)."""
        if not self.enabled:
            return None
        try:
            return self._fetch(fingerprint, outputs, root)
        except (RecursionError, MemoryError) as e:  # a hostile answer too deep or too big
            self._reject("unreadable", ac_key(fingerprint, self.namespaces[0]),
                         f"it is unreadable ({type(e).__name__})", "(for an unknown step)")
            return None

    def _fetch(self, fingerprint: str, outputs: Optional[Sequence[str]],
               root: Optional[str]) -> Optional[ActionEntry]:
        try:
            for ns in self.namespaces:
                key = ac_key(fingerprint, ns)
                raw = self.http.get("ac", key)
                if raw is None:
                    continue
                entry = self._accept(raw, fingerprint, ns, key, outputs, root)
                if entry is not None:
                    now = time.time()
                    # the entry keeps the age it has (cache_expires_after), never a future one
                    entry.created = min(entry.created, now)
                    entry.last_used = now
                    self.store.put_action(entry)
                    self.hits += 1
                    return entry
        except RemoteUnavailable as e:
            self._down(str(e))
            return None
        except RemoteRefused as e:
            self._refused_read(e)
            return None
        self.misses += 1
        return None

    def _accept(self, raw: bytes, fingerprint: str, ns: Optional[str], key: str,
                declared: Optional[Sequence[str]], root: Optional[str]) -> Optional[ActionEntry]:
        """The entry in ``raw`` if every check passes, else None (with a warning)."""
        doc = self._document(raw, key)
        if doc is None:
            return None
        what = f"(for step {str(doc.get('step'))[:100]})"
        if ns is not None:
            try:
                verify(doc, ns)
            except BadSignature as e:
                self._reject("untrusted", key, f"{e}, and only entries signed by a key in "
                             "[cache] trusted_keys are used", what)
                return None
        if ns is None and isinstance(doc.get("discovered"), dict):
            # unsigned: its record is checked like any other, but never imports a module it
            # names (discovered.Discovery.verify), whatever the document itself says
            doc["discovered"] = {**doc["discovered"], "untrusted": True}
        parsed = self._parse(doc, fingerprint, key, declared, what)
        if parsed is None:
            return None
        entry, blobs = parsed
        problem = self._room_problem(sum(size for d, (_, size) in blobs.items()
                                         if not self.store.has_blob(d)))
        if problem is not None:
            self._reject("size", key, problem, what)
            return None
        value = entry.value_digest
        fresh = not self.store.has_blob(value)
        for digest in [value] + sorted(set(blobs) - {value}):  # the value first: it may be refused
            sha, size = blobs[digest]
            if not self.store.has_blob(digest) and not self._download(digest, sha, size, entry.step):
                return None
            if digest == value and ns is None:
                if self._pickled(value, fresh):
                    self._reject("pickle", key, "its value is a pickle, and a pickle from a "
                                 "remote is loaded only when a key in [cache] trusted_keys signed "
                                 "its entry (plain data and numpy arrays are served unsigned)",
                                 what)
                    return None
                problem = self._undecodable(value, fresh)
                if problem is not None:
                    self._reject("unreadable", key, f"its value does not decode ({problem})",
                                 what)
                    return None
        problem = restore_problem(entry.outputs, self.store.get_blob, blobs, root,
                                  trusted=ns is not None)
        if problem is not None:
            self._reject("outputs", key, problem, what)
            return None
        if ns is None:
            mask_modes(entry, self.store, untrusted_mask())
        return entry

    def _room_problem(self, need: int) -> Optional[str]:
        """Why the blobs of an entry, ``need`` bytes said its entry (which may lie), may not
        be downloaded: more than ``[cache] max_size``, or than the store's file system has
        free, keeping DISK_MARGIN; None when they fit."""
        if self.max_size is not None and need > self.max_size:
            return (f"its blobs would take {need} bytes, more than [cache] max_size "
                    f"({self.max_size} bytes)")
        try:
            free = shutil.disk_usage(self.store.tmp).free
        except OSError:
            return None
        if need > free - DISK_MARGIN:
            return (f"its blobs would take {need} bytes, more than the free space of the "
                    f"store's file system ({free} bytes free, {DISK_MARGIN} of them kept free)")
        return None

    def _pickled(self, digest: str, fresh: bool) -> bool:
        """Whether the stored value ``digest`` would be unpickled; if so and it was ``fresh``ly
        downloaded, it is removed again (no entry of this store names it)."""
        with self.store.open_blob(digest) as f:
            pickled = needs_unpickling(f.read(4))
        if pickled and fresh:
            self.store.delete_blob(digest)
        return pickled

    def _undecodable(self, digest: str, fresh: bool) -> Optional[str]:
        """Why the unsigned data value ``digest`` does not decode (a forged or damaged
        encoding would otherwise fail every later run that uses it), or None. A value that
        fails is removed again if it was ``fresh``ly downloaded."""
        from zenbuild.serialize import loads

        try:
            loads(self.store.map_blob(digest))
        except Exception as e:  # noqa: BLE001 - anything a hostile encoding can raise
            if fresh:
                self.store.delete_blob(digest)
            return f"{type(e).__name__}: {str(e)[:100]}"
        return None

    def _document(self, raw: bytes, key: str) -> Optional[Dict[str, Any]]:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: 100,000 nested "["
            doc = None
        if not isinstance(doc, dict):
            self._reject("unreadable", key, "it is not a JSON object", "(for an unknown step)")
            return None
        if doc.get("format") != REMOTE_FORMAT or doc.get("version") != REMOTE_VERSION:
            return None  # another tool's or another version's entry: a plain miss
        return doc

    def _parse(self, doc: Dict[str, Any], fingerprint: str, key: str,
               declared: Optional[Sequence[str]], what: str,
               ) -> Optional[Tuple[ActionEntry, Dict[str, Tuple[str, int]]]]:
        try:
            if doc["fingerprint"] != fingerprint:
                # signed, it is an entry replayed under another key; unsigned, a broken one
                self._reject("untrusted" if "signature" in doc else "unreadable", key,
                             "it names another fingerprint", what)
                return None
            blobs = {str(d): (str(v[0]), int(v[1])) for d, v in doc["blobs"].items()}
            for d, (sha, size) in blobs.items():  # names only: never a path on this machine
                if not (is_digest(d) and _SHA256.fullmatch(sha) and size >= 0):
                    raise ValueError(f"it names a blob {d[:80]!r} that is not a digest")
            outputs = doc["outputs"]
            problem = outputs_problem(outputs, declared)
            if problem is not None:
                self._reject("outputs", key, problem, what)
                return None
            needed = {doc["value_digest"]} | {rec["digest"] for rec in outputs.values()}
            if not needed <= set(blobs):
                raise ValueError("it lacks a blob it needs")
            discovered = doc.get("discovered")
            if discovered is not None and not isinstance(discovered, dict):
                raise ValueError("its discovered record is not an object")
            created = float(doc["created"])  # when the writer made it: expiry counts from there
            if not created > 0:  # NaN, zero, negative
                raise ValueError(f"its creation time {doc['created']!r} is not a time")
            entry = ActionEntry(
                fingerprint, str(doc["pipeline"]), str(doc["step"]), str(doc["value_digest"]),
                outputs, dict(doc["components"]), duration=float(doc.get("duration", 0.0)),
                discovered=discovered, created=created,
            )
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            self._reject("unreadable", key, f"it is unreadable ({e})", what)
            return None
        return entry, blobs

    def _download(self, digest: str, sha: str, size: int, step: str) -> bool:
        sha_h = hashlib.sha256()
        xx_h = xxhash.xxh3_128()
        # named PID-...: what a killed reader left is swept by the next run (sweep_store_tmp)
        tmp = os.path.join(self.store.tmp, f"{os.getpid()}-remote-{threading.get_ident()}-{digest}")
        try:
            try:
                with open(tmp, "wb") as out:
                    n = self.http.get_to("cas", sha, out, [sha_h, xx_h], limit=size)
            except OSError as e:  # the local disk, not the server: full, read-only...
                self.warn(f"remote cache blob cas/{sha} (for step {step}) could not be written "
                          f"to {tmp}: {e.strerror or e}; treating it as a miss and computing "
                          "the step here")
                return False
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

    def document(self, entry: ActionEntry, blobs: Dict[str, List[Any]]) -> Dict[str, Any]:
        """The remote document of ``entry``, signed when there is a signing key."""
        doc: Dict[str, Any] = {
            "format": REMOTE_FORMAT,
            "version": REMOTE_VERSION,
            "fingerprint": entry.fingerprint,
            "pipeline": entry.pipeline,
            "step": entry.step,
            "value_digest": entry.value_digest,
            "outputs": entry.outputs,
            "components": entry.components,
            "duration": entry.duration,
            "created": entry.created or time.time(),
            "blobs": blobs,
        }
        if entry.discovered is not None:  # verified by the client before it serves it
            doc["discovered"] = entry.discovered
        doc = json.loads(json.dumps(doc))  # what a reader will parse: tuples are lists...
        if self.signer is not None:
            doc["signature"] = self.signer.sign(doc)
        return dict(doc)

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
            body = json.dumps(self.document(entry, blobs), sort_keys=True).encode()
            ns = self.signer.key_id if self.signer is not None else None
            self.http.put("ac", ac_key(entry.fingerprint, ns), body, len(body))
            self.uploaded += 1
        except RemoteUnavailable as e:
            self._down(str(e))
        except RemoteRefused as e:
            self._refused_write(e)
        except (OSError, KeyError, ValueError, CorruptBlob) as e:
            self.warn(f"could not upload step {entry.step} to the remote cache: {e}")

    def summary(self) -> str:
        parts = [f"{self.hits} fetched", f"{self.misses} missed"]
        if self.rejected:
            parts.append(f"{self.rejected} refused")
        if self.upload_enabled or self.uploaded:
            signed = " signed" if self.signer is not None and self.uploaded else ""
            parts.append(f"{self.uploaded}{signed} uploaded")
        return (f"remote cache {self.http.display}: {', '.join(parts)} "
                f"({self.bytes_down / 1e6:.1f} MB down, {self.bytes_up / 1e6:.1f} MB up)")

    def close(self, reporter: Any = None) -> None:
        """Close the connection; print the summary line through ``reporter`` if it prints lines."""
        try:
            line = getattr(reporter, "line", None)
            if line is not None and (self.hits or self.misses or self.uploaded):
                line(self.summary())  # may fail: a closed pipe (`zenbuild run | head`)
        finally:
            self.http.close()


def mask_modes(entry: ActionEntry, store: Store, mask: int) -> None:
    """Strip the bits in ``mask`` from every mode ``entry``'s outputs give (a file's record,
    a folder's manifest: written again into ``store`` when it changes), so that an entry no
    trusted key signed never makes a file or folder writable by others (docs/remote-cache.md).
    Entries made here, and signed ones, keep their modes exactly."""
    for rec in entry.outputs.values():
        if rec.get("kind") == "file":
            mode = rec.get("mode")
            if type(mode) is int and mode & mask:
                rec["mode"] = mode & ~mask
        elif rec.get("kind") == "dir":
            m = masked(parse_manifest(store.get_blob(rec["digest"])), mask)
            if m is not None:
                rec["digest"] = store.put_blob(m.encode())


def open_remote(
    config_cache: Dict[str, Any],
    store: Store,
    warn: Callable[[str], None],
    url: Optional[str] = None,
    upload: Optional[bool] = None,
    environ: Optional[Dict[str, str]] = None,
) -> Optional[RemoteCache]:
    """The remote cache the options and ``[cache]`` ask for, or None. ``url``/``upload`` given on
    the command line win over the config; an empty ``url`` turns the remote off. The trusted
    keys and the signing key are read here (a bad one is a ConfigError)."""
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
    max_size = config_cache.get("max_size")
    limit = parse_size(str(max_size)) if max_size else None
    trusted = trusted_keys(config_cache)
    signer = load_signer(config_cache, env, warn)
    if upload and trusted and signer is None:
        warn("uploading to the remote cache without a signing key (ZENBUILD_SIGNING_KEY, "
             "ZENBUILD_SIGNING_KEY_FILE or [cache] signing_key_file): readers that trust "
             "[cache] trusted_keys will not use these entries")
    return RemoteCache(HttpCache(url, headers, timeout), store, warn, upload=bool(upload),
                       signer=signer, trusted=trusted, max_size=limit)
