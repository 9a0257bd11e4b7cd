"""Trust in remote action-cache entries: Ed25519 signatures (key text formats, the writer's
private key, the canonical byte string a signature covers, verification) and the checks every
entry must pass before anything it names is written to disk or decoded (output paths, folder
manifests, value encodings). store/remote.py applies them; docs/remote-cache.md explains why.

A key is named by its public half: ``ed25519:`` + standard base64 of the 32 raw public-key
bytes (``key_id``); that is the text of a ``[cache] trusted_keys`` item. A private key is a
PKCS#8 PEM block (what ``zenbuild cache keygen`` writes), read from ZENBUILD_SIGNING_KEY (the key
itself), ZENBUILD_SIGNING_KEY_FILE or ``[cache] signing_key_file``.

What is signed (version 1)::

    b"zenbuild-ac-signature-v1\\0" + key_id + b"\\0" + canonical JSON of the entry

where the entry is the whole remote document without its "signature" member (format, version,
fingerprint, pipeline, step, value_digest, outputs, components, duration, blobs, discovered)
and canonical JSON is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.
A reader re-encodes the document it parsed the same way, so whitespace or key order on the
server make no difference, and any changed value breaks the signature. The ``cryptography``
package is imported only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import posixpath
import stat
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from zenbuild.errors import ConfigError
from zenbuild.serialize import MAGIC

KEY_PREFIX = "ed25519:"
SIGNATURE_TAG = b"zenbuild-ac-signature-v1\0"
ENV_KEY = "ZENBUILD_SIGNING_KEY"
ENV_KEY_FILE = "ZENBUILD_SIGNING_KEY_FILE"
_RAW_LEN = 32
_SIG_LEN = 64
# Value encodings that decode without unpickling (serialize.MAGIC: plain data and numpy
# arrays). A value in any other encoding (ZBP1/ZBP2/ZBC1 pickles, or a format this version
# does not know) is loaded from a remote only when a trusted key signed its entry.
DATA_ENCODINGS = (MAGIC,)


AC_NAMESPACE = b"zenbuild-ac-v2\0"  # remote format 2 (store/remote.py)
UNSIGNED = b"unsigned"


def ac_key(fingerprint: str, signer: Optional[str] = None) -> str:
    """The remote action-cache key of a fingerprint in a signer's namespace (``signer`` is a
    public key id; None: the unsigned namespace). SHA-256 hex, versioned by its namespace, so
    an entry one signer wrote can never occupy another signer's key (CVE-2025-36852)."""
    ns = signer.encode("ascii") if signer is not None else UNSIGNED
    return hashlib.sha256(AC_NAMESPACE + ns + b"\0" + fingerprint.encode()).hexdigest()


class BadSignature(Exception):
    """An entry's signature is missing, malformed, by another key, or does not verify."""


def canonical_json(doc: Any) -> bytes:
    """The one byte string a JSON document has for signing (sorted keys, no spaces, ASCII)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def signed_message(key_id: str, doc: Mapping[str, Any]) -> bytes:
    """The bytes an entry's signature covers: the domain tag, the signer, the entry."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return SIGNATURE_TAG + key_id.encode("ascii") + b"\0" + canonical_json(body)


def key_id_of_raw(raw: bytes) -> str:
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_key_id(text: Any, where: str = "[cache] trusted_keys") -> str:
    """``text`` checked and normalized as a public key id; ConfigError naming ``where``."""
    raw = _raw_of(text)
    if raw is None:
        raise ConfigError(
            f"{where}: {str(text)[:80]!r} is not a zenbuild public key. Each key is the line "
            f'"{KEY_PREFIX}BASE64" that `zenbuild cache keygen` printed (32 bytes in base64). '
            "Paste it again from there."
        )
    return key_id_of_raw(raw)


def _raw_of(text: Any) -> Optional[bytes]:
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        return None
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _RAW_LEN else None


class Signer:
    """The writer's private key: signs entries under its ``key_id``."""

    def __init__(self, private_key: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)
        self.key_id = key_id_of_raw(raw)

    @classmethod
    def from_pem(cls, pem: bytes, where: str) -> Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        text = pem.strip()
        if b"\\n" in text and b"\n" not in text:  # a CI secret that kept "\n" literally
            text = text.replace(b"\\n", b"\n")
        try:
            key = serialization.load_pem_private_key(text + b"\n", password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"{where} does not hold an Ed25519 private key in PEM form (an unencrypted "
                "'-----BEGIN PRIVATE KEY-----' block, as `zenbuild cache keygen` writes). "
                "Give it the private key file keygen wrote, or its contents."
            )
        return cls(key)

    def sign(self, doc: Mapping[str, Any]) -> Dict[str, str]:
        """The "signature" member for ``doc`` (which must not be changed afterwards)."""
        sig = self._key.sign(signed_message(self.key_id, doc))
        return {"alg": "ed25519", "key": self.key_id, "sig": base64.b64encode(sig).decode("ascii")}


def verify(doc: Mapping[str, Any], key_id: str) -> None:
    """Raise BadSignature unless ``doc`` carries a valid signature by ``key_id``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = doc.get("signature")
    if sig is None:
        raise BadSignature("it is not signed")
    if not isinstance(sig, dict) or sig.get("alg") != "ed25519":
        raise BadSignature("its signature is malformed")
    if sig.get("key") != key_id:
        signer = sig.get("key")
        shown = signer[:60] if isinstance(signer, str) else "?"
        raise BadSignature(f"it is signed by another key ({shown})")
    raw = _raw_of(key_id)
    try:
        value = base64.b64decode(str(sig.get("sig", "")), validate=True)
    except (binascii.Error, ValueError):
        value = b""
    if raw is None or len(value) != _SIG_LEN:
        raise BadSignature("its signature is malformed")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(value, signed_message(key_id, doc))
    except (InvalidSignature, ValueError, TypeError):
        raise BadSignature("its signature does not verify (the entry was altered or forged)") \
            from None


def trusted_keys(config_cache: Mapping[str, Any]) -> List[str]:
    """``[cache] trusted_keys``, checked and normalized, without duplicates."""
    keys = config_cache.get("trusted_keys") or []
    if not isinstance(keys, (list, tuple)):
        raise ConfigError("[cache] trusted_keys must be a list of \"ed25519:...\" strings.")
    return list(dict.fromkeys(parse_key_id(k) for k in keys))


def load_signer(
    config_cache: Mapping[str, Any],
    environ: Mapping[str, str],
    warn: Callable[[str], None],
) -> Optional[Signer]:
    """The writer's key from ZENBUILD_SIGNING_KEY (the key text), else the file named by
    ZENBUILD_SIGNING_KEY_FILE, else ``[cache] signing_key_file``; None when none is set."""
    text = environ.get(ENV_KEY)
    if text:
        return Signer.from_pem(text.encode("utf-8", "replace"), f"the environment variable {ENV_KEY}")
    path = environ.get(ENV_KEY_FILE) or config_cache.get("signing_key_file")
    if not path:
        return None
    where = (f"{ENV_KEY_FILE}={path}" if environ.get(ENV_KEY_FILE)
             else f"[cache] signing_key_file = {path!r}")
    try:
        with open(str(path), "rb") as f:
            data = f.read(64 * 1024)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise ConfigError(
            f"cannot read the signing key ({where}): {e.strerror or e}. Point it at the private "
            "key file `zenbuild cache keygen` wrote, or unset it to upload unsigned entries."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"the signing key file {path} can be read by other users (mode "
             f"{stat.S_IMODE(mode):o}); make it private with: chmod 600 {path}")
    return Signer.from_pem(data, where)


def new_key_pair() -> Tuple[bytes, str]:
    """A fresh private key (PKCS#8 PEM, unencrypted) and its public key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, Signer(key).key_id


def namespaces(trusted: Iterable[str], signer: Optional[Signer]) -> List[Optional[str]]:
    """Where a reader looks, in order: each trusted signer's namespace (the writer's own key is
    trusted by the writer); only when no key at all is configured, the unsigned one (None)."""
    found: List[Optional[str]] = list(dict.fromkeys(
        list(trusted) + ([signer.key_id] if signer is not None else [])))
    return found if found else [None]


# -- checks on what an entry names ------------------------------------------------------------
MAX_NAME_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, tmpfs: a longer name cannot be made
MAX_PATH_BYTES = 4095  # PATH_MAX (4096, with its NUL): a longer path cannot be opened


def safe_rel(rel: Any) -> bool:
    """A relative, normalized posix path that stays below its base (no "..", not absolute)
    and that this machine can make: each name at most MAX_NAME_BYTES, the whole at most
    MAX_PATH_BYTES, every character one the file system encoding can write."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    try:
        raw = os.fsencode(rel)
    except UnicodeError:  # a lone surrogate: no file can have that name
        return False
    if len(raw) > MAX_PATH_BYTES or any(len(part) > MAX_NAME_BYTES for part in raw.split(b"/")):
        return False
    norm = posixpath.normpath(rel)
    return norm == rel and norm != "." and not norm.startswith("../") and norm != ".."


def path_too_long(root: str, rel: str) -> bool:
    """Whether ``rel`` under ``root`` is longer than a path may be (MAX_PATH_BYTES)."""
    return len(os.fsencode(os.path.join(root, rel))) > MAX_PATH_BYTES


def outputs_problem(outputs: Any, declared: Optional[Sequence[str]]) -> Optional[str]:
    """Why an entry's ``outputs`` may not be restored, or None. They must be well formed and,
    when the step's ``declared`` outputs are known, name exactly those paths."""
    if not isinstance(outputs, dict):
        return "its outputs are not an object"
    for rel, rec in outputs.items():
        if not safe_rel(rel):
            return f"it names an unsafe output path {str(rel)[:200]!r}"
        if (not isinstance(rec, dict) or rec.get("kind") not in ("file", "dir", "link")
                or not isinstance(rec.get("digest"), str)):
            return f"its record of output {rel} is malformed"
    if declared is not None and set(outputs) != set(declared):
        extra = sorted(set(outputs) - set(declared))
        missing = sorted(set(declared) - set(outputs))
        parts = ([f"undeclared {', '.join(extra)}"] if extra else []) + (
            [f"missing {', '.join(missing)}"] if missing else [])
        return f"its outputs are not the step's declared outputs ({'; '.join(parts)})"
    return None


def manifest_problem(rel: str, data: bytes, blobs: Mapping[str, Any]) -> Optional[str]:
    """Why the folder manifest of output ``rel`` may not be restored, or None: every file,
    folder and link it lists must be a safe path below the folder, listed once, not inside
    another listed file or link, and every file one of the entry's ``blobs``."""
    from zenbuild.store.folders import entries_problem, parse

    try:
        m = parse(data)
        names: Set[str] = set()
        for f in m.files:
            inner, digest = f[0], f[1]
            if not safe_rel(inner) or not isinstance(digest, str) or digest not in blobs \
                    or inner in names or len(f) != 4:
                return f"the manifest of output {rel} is incomplete or unsafe"
            names.add(inner)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError):
        return f"the manifest of output {rel} is unreadable"
    return entries_problem(rel, m, names)


def symlinked_parent(root: str, rel: str) -> Optional[str]:
    """The first folder on the way from ``root`` to ``rel`` that is a symbolic link (restoring
    through it would write outside the declared output), or None."""
    cur = root
    parts = rel.split("/")
    for i, part in enumerate(parts[:-1]):
        cur = os.path.join(cur, part)
        if os.path.islink(cur):
            return "/".join(parts[: i + 1])
    return None


def needs_unpickling(head: bytes) -> bool:
    """Whether a stored value starting with ``head`` would be unpickled to be used."""
    return head[:4] not in DATA_ENCODINGS


def restore_problem(outputs: Mapping[str, Mapping[str, Any]], get_blob: Callable[[str], bytes],
                    blobs: Mapping[str, Any], root: Optional[str],
                    trusted: bool = False) -> Optional[str]:
    """Why an entry's ``outputs`` may not be written under ``root`` (a bad folder manifest, a
    path through a symbolic link, and unless the entry is ``trusted`` (signed by a trusted
    key) a symbolic link whose target is absolute or leaves its folder), or None. Manifests
    are read with ``get_blob``."""
    from zenbuild.store.folders import contained, escaping_link, parse

    for rel, rec in sorted(outputs.items()):
        paths = [rel]
        if rec.get("kind") == "link":
            target = get_blob(rec["digest"]).decode("utf-8", "surrogateescape")
            if not trusted and not contained(rel, target):
                return (f"output {rel} is a symbolic link -> {target[:200]!r} that points "
                        "outside the project, and only an entry signed by a key in "
                        "[cache] trusted_keys may make one")
        if rec.get("kind") == "dir":
            data = get_blob(rec["digest"])
            problem = manifest_problem(rel, data, blobs)
            if problem is not None:
                return problem
            m = parse(data)
            bad = None if trusted else escaping_link(m)
            if bad is not None:
                return (f"output {rel} holds a symbolic link {bad[0]} -> {bad[1][:200]!r} that "
                        "points outside its folder, and only an entry signed by a key in "
                        "[cache] trusted_keys may make one")
            inner = [f[0] for f in m.files] + list(m.links) + list(m.dirs)
            paths = [f"{rel}/{p}" for p in inner] or [f"{rel}/."]
        for path in paths if root is not None else ():
            if path_too_long(root or "", path):
                return (f"restoring output {rel} would make the path {path[:200]!r}..., "
                        f"longer than the {MAX_PATH_BYTES} bytes a path may have here")
            link = symlinked_parent(root or "", path)
            if link is not None:
                return f"restoring output {rel} would write through the symbolic link {link}"
    return None
