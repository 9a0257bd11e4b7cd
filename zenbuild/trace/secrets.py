"""Which environment variables a trace records, and which values it must hide: the built-in
deny-list and ``[fingerprint] ignore_env`` filters (env_filter; bulk_wanted: those a read of
the whole environment depends on), secret-looking names and credential-looking values
(is_hidden), and the store's key of the digests kept of hidden values (keyed_digest,
secret_key). Pure functions and the key file: nothing here records anything.
Re-exported by zenbuild.trace, where the rest of zenbuild imports them from."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from zenbuild.lazyre import LazyPattern

# -- environment variable filters ----------------------------------------------------------------

DENY_ENV = frozenset({
    "PATH", "HOME", "TERM", "PWD", "OLDPWD", "SHELL", "USER", "LOGNAME", "LANG", "LANGUAGE",
    "TMPDIR", "TMP", "TEMP", "COLUMNS", "LINES", "COLORTERM", "NO_COLOR", "FORCE_COLOR",
    "DISPLAY", "HOSTNAME", "SHLVL", "_", "MAIL", "EDITOR", "PAGER", "VIRTUAL_ENV",
})
DENY_ENV_PREFIXES = ("LC_", "PYTHON", "ZENBUILD_", "TERM_", "SSH_", "XDG_", "PYTEST_", "CONDA_")
# Left out of a whole-environment read only (a step that names one still depends on it): what
# a terminal, make, git hooks or an editor set per session or per call, which a step copying
# os.environ (for a subprocess, a settings class) does not mean to depend on.
BULK_IGNORE_ENV = frozenset({
    "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "TMUX", "TMUX_PANE", "STY", "WINDOW",
    "WINDOWID", "GPG_TTY", "GPG_AGENT_INFO", "INVOCATION_ID", "JOURNAL_STREAM",
    "DBUS_SESSION_BUS_ADDRESS", "SESSION_MANAGER", "SECURITYSESSIONID", "ITERM_SESSION_ID",
    "ITERM_PROFILE", "WT_SESSION", "WT_PROFILE_ID", "VTE_VERSION", "LS_COLORS", "LSCOLORS",
    "LESSOPEN", "LESSCLOSE", "PRE_COMMIT", "PS1", "PS2", "PROMPT_COMMAND", "MANPATH",
    "INFOPATH", "TERMINAL_EMULATOR", "WSL_INTEROP", "WSL_DISTRO_NAME", "WSLENV", "XAUTHORITY",
    "WINDOWPATH", "DESKTOP_SESSION", "DESKTOP_STARTUP_ID", "COLORFGBG", "LC_TERMINAL",
    "LC_TERMINAL_VERSION", "MAIL", "MAILPATH", "OLDPWD", "SHLVL", "_", "CI_JOB_ID",
    "CI_PIPELINE_ID", "CI_JOB_TOKEN", "BUILD_ID", "BUILD_NUMBER", "MAKE_TERMOUT",
    "MAKE_TERMERR", "MPLBACKEND", "CLICOLOR", "CLICOLOR_FORCE", "MYVIMRC", "VIMRUNTIME",
})
# per-session, per-terminal and per-CI-run prefixes (a CI run's ids change on every run)
BULK_IGNORE_PREFIXES = ("GIT_", "PRE_COMMIT_", "VSCODE_", "KONSOLE_", "GNOME_TERMINAL_",
                        "HIST", "KITTY_", "WEZTERM_", "ZELLIJ", "ALACRITTY_", "TILIX_",
                        "TERMINATOR_", "WARP_", "_P9K_", "P9K_", "POWERLEVEL9K_", "ITERM_",
                        "GIO_LAUNCHED_", "SUDO_", "KDE_", "GNOME_", "__CF_", "Apple_",
                        "GITHUB_RUN_", "GITHUB_JOB", "GITHUB_SHA", "GITHUB_REF", "GITHUB_EVENT_",
                        "GITHUB_ACTION", "GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STEP_",
                        "GITHUB_STATE", "GITHUB_PATH", "RUNNER_", "ACTIONS_", "BUILDKITE_",
                        "CIRCLE_", "TRAVIS_", "JENKINS_", "CI_COMMIT_", "CI_JOB_",
                        "CI_PIPELINE_", "CI_RUNNER_", "STARSHIP_", "INSIDE_EMACS", "EMACS_",
                        "NVIM", "VIM_", "TERMINAL_", "DIRENV_", "JPY_", "PYDEVD_", "IDE_",
                        "PYCHARM_", "JETBRAINS_", "TERM_PROGRAM")


def bulk_wanted(name: str, wanted: Callable[[str], bool]) -> bool:
    """Whether a whole-environment read depends on variable ``name`` (``wanted``: the
    recording's filter, env_filter)."""
    return (wanted(name) and name not in BULK_IGNORE_ENV
            and not name.startswith(BULK_IGNORE_PREFIXES))
# A secret-looking name: a word of it (split at "_", "-", ".") that ends with one of _WORDS
# (API_TOKEN, GHTOKEN, OAUTH, MYSQL_PWD, GITHUB_PAT), or one of _ANYWHERE in it (PGPASSWORD,
# AZURE_CONNECTION_STRING); not a name whose last word says it holds a path to the secret
# (SSL_CERT_FILE, PASSWORD_FILE): its value is a path. Whole words keep ordinary names out
# (TOKENIZERS_PARALLELISM, AUTHOR, KEYWORDS, MODEL_PATH).
_WORDS = ("KEY", "KEYS", "TOKEN", "TOKENS", "PASS", "PWD", "AUTH", "CERT", "DSN", "SALT",
          "SECRET", "SECRETS", "CRED", "CREDS", "SESSION", "COOKIE", "COOKIES", "JWT", "BEARER")
_EXACT_WORDS = frozenset({"PAT"})
_ANYWHERE = ("SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "WEBHOOK", "SIGNATURE",
             "CONNECTION_STRING", "CONNECTIONSTRING", "CONN_STR", "CONNSTR", "APIKEY")
_PATH_WORDS = frozenset({"FILE", "FILES", "DIR", "DIRS", "PATH", "PATHS", "FOLDER"})
_WORD_SPLIT = LazyPattern(r"[_\-.]+")
# A value that looks like a credential, whatever its variable is called: a URL with a password
# in its userinfo (scheme://user:password@host) or a token there (12 characters or more, with
# a digit: not ssh://git@host or postgres://postgres@host), a PEM block, a token of a well-known
# shape (GitHub, GitLab, OpenAI/Stripe, Slack, Hugging Face, npm, PyPI, AWS, Google; at least 16
# characters after the prefix, so "sk-learn" is not one), a JWT, or a key=value pair naming a
# password, secret, token, key or signature (a connection string, a signed URL's query).
_CREDENTIAL_PATTERN = (
    r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#\s@:]*:[^/?#\s@]+|(?=[^/?#\s@:]*\d)[^/?#\s@:]{12,})@"
    r"|-----BEGIN "
    r"|(?<![A-Za-z0-9])(?:gh[pousr]_|github_pat_|glpat-|sk-|[sr]k_live_|sk_test_|xox[abposr]-|hf_"
    r"|npm_|pypi-|AKIA|ASIA|AIza)[A-Za-z0-9_-]{16,}"
    r"|(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|(?i:(?:^|[?&;,\s])[A-Za-z0-9_.-]*(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key"
    r"|access[_-]?key|account[_-]?key|sig|signature|credential)=[^&;,\s])")
_CREDENTIAL: List[Any] = []  # compiled when a value is first looked at (a no-op looks at none)


def _credential() -> Any:
    if not _CREDENTIAL:
        _CREDENTIAL.append(re.compile(_CREDENTIAL_PATTERN))
    return _CREDENTIAL[0]


def is_secret(name: str) -> bool:
    """Whether a variable looks secret by its name (its value must never be shown, and is kept
    only as a keyed digest)."""
    upper = name.upper()
    words = [w for w in _WORD_SPLIT.split(upper) if w]
    if not words or words[-1] in _PATH_WORDS:
        return False
    if any(a in upper for a in _ANYWHERE):
        return True
    return any(w in _EXACT_WORDS or w.endswith(_WORDS) for w in words)


def looks_like_credential(value: str) -> bool:
    """Whether a value looks like a credential whatever its variable's name (_CREDENTIAL)."""
    return _credential().search(value) is not None


def is_hidden(name: str, value: Optional[str]) -> bool:
    """Whether a variable's value must be hidden: never stored, shown or sent, only its keyed
    digest (keyed_digest) kept. A secret-looking name, or a value that looks like a credential.
    An unset variable (None) has nothing to hide."""
    return value is not None and (is_secret(name) or _credential().search(value) is not None)


# -- the store's key: the digest of a hidden value ------------------------------------------------

KEY_FILE = "secret.key"  # in the store: the key of hidden values' digests (0600, 32 random bytes)
KEY_SIZE = 32


def keyed_digest(key: bytes, value: str) -> str:
    """The digest kept of a hidden value: HMAC-SHA256 under the store's key, "k:" + hex. It
    tells nothing of the value without the key (an unkeyed hash of a weak secret is reversed by
    trying a dictionary), and differs from store to store."""
    import hashlib
    import hmac

    return "k:" + hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def secret_key(store: str) -> bytes:
    """The store's key for hidden values' digests, made (0600) on first use. Two runs racing to
    make it agree: the key is written to a temp file and linked into place, never replaced."""
    path = os.path.join(store, KEY_FILE)
    try:
        return _checked_key(path)
    except FileNotFoundError:
        pass
    os.makedirs(store, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(KEY_SIZE))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _checked_key(path)


def _checked_key(path: str) -> bytes:
    """The key at ``path``: 32 bytes. A file of another size, or a folder there, is refused
    (StoreError, exit 2): a damaged key must not quietly key every secret anew. Raises
    FileNotFoundError when there is nothing at ``path``."""
    from zenbuild.errors import StoreError

    fix = (f"Delete {path} to let zenbuild make a new key; every step that takes a secret "
           "Env then executes once, since its secret's digest changes with the key (so does "
           "a step that read a hidden variable).")
    try:
        with open(path, "rb") as f:
            data = f.read(KEY_SIZE + 1)
    except (IsADirectoryError, NotADirectoryError):
        raise StoreError(f"{path} is a folder, not the store's secret key (a file of "
                         f"{KEY_SIZE} random bytes). {fix}") from None
    except PermissionError as e:
        raise StoreError(f"the store's secret key {path} cannot be read ({e.strerror}). "
                         f"Make it readable by you, or: {fix}") from None
    if len(data) != KEY_SIZE:
        raise StoreError(f"the store's secret key {path} is damaged: it holds "
                         f"{'more than ' if len(data) > KEY_SIZE else ''}{min(len(data), KEY_SIZE)}"
                         f" bytes, not {KEY_SIZE}. {fix}")
    return data


def env_filter(ignore: Iterable[str]) -> Callable[[str], bool]:
    """Whether a variable is tracked: not in the built-in deny-list (DENY_ENV, its prefixes)
    nor matched by a name or fnmatch pattern of ``ignore`` ([fingerprint] ignore_env)."""
    return _env_filter(ignore)  # type: ignore[no-any-return]


_FILTERS: Dict[Tuple[str, ...], Any] = {}  # ignore_env -> its filter: one per step recorded


def _env_filter(ignore: Iterable[str]) -> Any:
    key = tuple(ignore)
    got = _FILTERS.get(key)
    if got is None:
        got = _FILTERS[key] = _make_env_filter(key)
    return got


def _make_env_filter(ignore: Tuple[str, ...]) -> Any:
    import fnmatch

    pats = [p for p in ignore if p]
    rx = re.compile("|".join(fnmatch.translate(p) for p in pats)) if pats else None

    def wanted(name: str) -> bool:
        if name in DENY_ENV or name.startswith(DENY_ENV_PREFIXES):
            return False
        return rx is None or rx.match(name) is None

    return wanted
