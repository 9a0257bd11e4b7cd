"""`zenbuild cache keygen`: write a new Ed25519 key pair for signing remote-cache entries."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from zenbuild.errors import ConfigError
from zenbuild.store.signing import ENV_KEY, ENV_KEY_FILE, new_key_pair


def default_key_path(environ: Optional[dict] = None) -> str:
    """~/.config/zenbuild/signing-key (XDG_CONFIG_HOME respected): outside any checkout, so the
    private key is not committed by accident."""
    env = environ if environ is not None else os.environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "zenbuild", "signing-key")


def _create(path: str, data: bytes, mode: int) -> None:
    """Write a new file: O_EXCL, so an existing file (or one made meanwhile) is never touched."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never added any
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def keygen(path: str) -> Tuple[str, str, str]:
    """Write the private key to ``path`` (mode 0600) and the public key id to ``path``.pub;
    returns (private path, public path, key id). Existing files are never overwritten."""
    path = os.path.abspath(os.path.expanduser(path))
    pub = path + ".pub"
    for p in (path, pub):
        if os.path.lexists(p):
            raise ConfigError(
                f"{p} already exists; zenbuild cache keygen never overwrites a file (it may be "
                "the key your CI signs with). Pass another path with --out, or move the old "
                "key pair away first."
            )
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        pem, key_id = new_key_pair()
        _create(path, pem, 0o600)
        try:
            _create(pub, (key_id + "\n").encode("ascii"), 0o644)
        except OSError:
            os.unlink(path)  # we just made it: leave no half pair behind
            raise
    except FileExistsError as e:
        raise ConfigError(f"{e.filename} was created meanwhile; not overwritten. Run "
                          "keygen again with another --out.") from None
    except OSError as e:
        raise ConfigError(f"cannot write the key pair at {path}: {e.strerror or e}. Pass a "
                          "writable path with --out.") from None
    return path, pub, key_id


def _checkout_of(path: str) -> Optional[str]:
    """The project or git checkout folder holding ``path`` (zenbuild.toml or .git in it or
    above), or None."""
    d = os.path.dirname(path)
    while True:
        if any(os.path.exists(os.path.join(d, m)) for m in ("zenbuild.toml", ".git")):
            return d
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def keygen_text(private: str, public: str, key_id: str) -> List[str]:
    """What keygen prints: where the keys went, how a writer uses the private one, and the
    line every reader pastes into zenbuild.toml (with a warning first when the private key
    landed inside a checkout, where a commit would publish it)."""
    inside = _checkout_of(private)
    warn = [f"Warning: the private key is inside {inside}; do not commit it (add "
            f"{os.path.relpath(private, inside)} to .gitignore) or move it out.", ""] \
        if inside else []
    return warn + [
        f"Wrote the private key to {private} (mode 0600). Keep it secret: only the machine that",
        "uploads (usually CI) needs it, as",
        f"    {ENV_KEY_FILE}={private}",
        f"or its contents in the secret environment variable {ENV_KEY}.",
        f"Wrote the public key to {public}.",
        "",
        "Paste this into the zenbuild.toml of every project that reads the cache:",
        "",
        "[cache]",
        f'trusted_keys = ["{key_id}"]',
    ]
