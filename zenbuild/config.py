"""zenbuild.toml / [tool.zenbuild] -> a frozen Config, with errors naming file, key and line."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from zenbuild.errors import ConfigError
from zenbuild.lazyre import LazyPattern

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.digest import StatKey
from zenbuild.records import field, record

CONFIG_NAME = "zenbuild.toml"
# The parsed config file is kept in the default store folder, keyed by the file's stat: a run
# whose config did not change then imports no TOML parser (tomllib costs ~4 ms to import).
CONFIG_CACHE = "config-cache.json"
_CONFIG_CACHE_VERSION = 2  # 2: a pyproject.toml's entry holds its [tool.zenbuild] table


def __getattr__(name: str) -> Any:
    """``config.tomllib``: the TOML parser, imported on first use."""
    if name == "tomllib":
        return _toml()
    raise AttributeError(name)


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


@record(frozen=True)
class StepSettings:
    enable_cache: Optional[bool] = None
    cache_expires_after: Optional[float] = None  # seconds (parsed from "6h", "PT6H", ...)
    enable_cache_from: str = ""  # Config.step_settings: the [steps.NAME] that set enable_cache


@record(frozen=True)
class Config:
    """Everything zenbuild.toml says, with defaults filled in. Paths are absolute."""

    root: str
    source: Optional[str] = None
    pipelines: Tuple[str, ...] = ()
    store: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, StepSettings] = field(default_factory=dict)
    track_packages: bool = True
    # dynamic traces ([fingerprint]): files read without File(), project functions run
    # (environment variables read are always tracked, minus the deny-list and ignore_env)
    track_reads: bool = True
    trace_calls: bool = True
    ignore_env: Tuple[str, ...] = ()
    jobs: Optional[int] = None
    watch: Mapping[str, Any] = field(default_factory=dict)
    cache: Mapping[str, Any] = field(default_factory=dict)

    def step_settings(self, invocation: str, function: str) -> Optional[StepSettings]:
        """The [steps.NAME] settings of a call: each setting from [steps.CALL] when that
        section has it, else from [steps.FUNCTION] (a call's section need not repeat what the
        function's says); ``enable_cache_from`` names the section enable_cache came from."""
        own, fn = self.steps.get(invocation), self.steps.get(function)
        if own is None and fn is None:
            return None
        parts = [(k, st) for k, st in ((invocation, own), (function, fn)) if st is not None]
        enable, source = next(((st.enable_cache, k) for k, st in parts
                               if st.enable_cache is not None), (None, ""))
        expires = next((st.cache_expires_after for _, st in parts
                        if st.cache_expires_after is not None), None)
        return StepSettings(enable, expires, source)


# key -> (type or types, description); tables map to nested dicts
_TOP: Dict[str, Any] = {
    "pipelines": (list, "a list of \"module:attribute\" strings"),
    "store": (str, "a folder path"),
    "params": (dict, "a table of pipeline parameter defaults"),
    "steps": (dict, "a table of [steps.NAME] tables"),
    "fingerprint": (dict, "a table"),
    "jobs": (int, "an integer >= 1"),
    "watch": (dict, "a table"),
    "cache": (dict, "a table"),
}
_FINGERPRINT = {
    "packages": (bool, "true or false"),
    "track_reads": (bool, "true or false"),
    "trace_calls": (bool, "true or false"),
    "ignore_env": (list, "a list of environment variable names or glob patterns"),
}
_STEP = {"enable_cache": (bool, "true or false"),
         "cache_expires_after": (str, 'a duration such as "6h"')}
_WATCH = {
    "debounce_ms": (int, "milliseconds, an integer"),
    "poll": (bool, "true or false"),
    "ignore": (list, "a list of glob patterns"),
    "on_busy": (str, '"queue" or "restart"'),
}
_CACHE = {
    "remote": (str, "an http(s) URL"),
    "upload": (bool, "true or false"),
    "header_env": (str, "the name of an environment variable holding NAME: VALUE"),
    "timeout_s": ((int, float), "seconds"),
    "max_size": (str, 'a size such as "5GB"'),
    "trash_keep": (str, 'an age such as "30d" (cache gc removes older trash folders)'),
    # signed remote entries (store/signing.py): readers trust these public keys; a writer
    # signs with the private key in this file (relative to the project root)
    "trusted_keys": (list, 'a list of "ed25519:..." public keys from `zenbuild cache keygen`'),
    "signing_key_file": (str, "the path of a private key file from `zenbuild cache keygen`"),
}


def config_where(config: Config, table: str, key: str) -> str:
    """"zenbuild.toml:LINE" of ``key`` in ``[table]`` (``[table.key]`` for a section) of the
    project's config file, for a message; the file alone when the line is not found."""
    source = config.source or os.path.join(config.root, CONFIG_NAME)
    try:
        with open(source, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return source
    prefix = "tool.zenbuild." if os.path.basename(source) == "pyproject.toml" else ""
    line = _line_of(text, prefix + table, key)
    return f"{source}:{line}" if line else source


def _cache_paths(cache: Dict[str, Any], root: str) -> Dict[str, Any]:
    """[cache] with signing_key_file made absolute (relative to the project root)."""
    if isinstance(cache.get("signing_key_file"), str):
        cache["signing_key_file"] = os.path.join(root, os.path.expanduser(cache["signing_key_file"]))
    return cache


def _line_of(text: str, table: str, key: str) -> Optional[int]:
    """Best-effort line number of ``key`` inside ``[table]`` (or at top level)."""
    current = ""
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[+\s*([^\]]+?)\s*\]+", s)
        if m:
            current = m.group(1).replace('"', "").replace(" ", "")
            if key and current == (f"{table}.{key}" if table else key):
                return i
            continue
        if current == table and re.match(rf"^\"?{re.escape(key)}\"?\s*=", s):
            return i
    return None


class _Checker:
    def __init__(self, path: str, text: str, prefix: str) -> None:
        self.path = path
        self.text = text
        self.prefix = prefix  # "tool.zenbuild" inside pyproject.toml

    def fail(self, table: str, key: str, msg: str) -> ConfigError:
        full = ".".join(p for p in (self.prefix, table) if p)
        line = _line_of(self.text, full, key)
        where = f"{self.path}:{line}" if line else self.path
        name = ".".join(p for p in (table, key) if p)
        return ConfigError(f"{where}: {name}: {msg}")

    def check(self, table: str, data: Dict[str, Any], schema: Dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in schema:
                known = ", ".join(sorted(schema))
                raise self.fail(table, key, f"unknown key (known keys: {known})")
            types, desc = schema[key]
            ok = isinstance(value, types) and not (
                isinstance(value, bool) and types in (int, (int, float))
            )
            if not ok:
                raise self.fail(table, key, f"expected {desc}, got {type(value).__name__} {value!r}")


def find_project(start: str) -> Tuple[str, Optional[str]]:
    """(root, config file) found by walking up from ``start``; (start, None) when none."""
    d = os.path.abspath(start)
    while True:
        cand = os.path.join(d, CONFIG_NAME)
        if os.path.isfile(cand):
            return d, cand
        pp = os.path.join(d, "pyproject.toml")
        if os.path.isfile(pp):
            try:
                with open(pp, "rb") as f:
                    if b"[tool.zenbuild" in f.read():
                        return d, pp
            except OSError:
                pass
        parent = os.path.dirname(d)
        if parent == d:
            return os.path.abspath(start), None
        d = parent


# What a store folder holds before its database exists (a command stopped before it opened
# the store: compiled sources, a parsed config, a key, or Store() itself, whose database comes
# after cas/, tmp/ and the lock): name -> whether an entry of that name is zenbuild's.
_PYCODE_NAME = LazyPattern(r"[0-9a-f]{32}(\.\d+\.tmp)?")
_TEMP_OF = LazyPattern(r"(config-cache\.json|secret\.key)\.\d+\.tmp")


def _made_before_database(folder: str, name: str) -> bool:
    """Whether ``folder``/``name`` is what zenbuild writes into a new store folder before its
    zenbuild.db: pycode/ of compiled sources, empty cas/ and tmp/, the lock file (a pid), the
    parsed config, the secret key, or one of their temp files."""
    path = os.path.join(folder, name)
    try:
        if name == "pycode":
            return all(_PYCODE_NAME.fullmatch(n) for n in os.listdir(path))
        if name in ("cas", "tmp"):
            return not os.listdir(path)
        if name == "lock":
            with open(path, "rb") as f:
                return f.read(32).strip().isdigit() or os.fstat(f.fileno()).st_size == 0
        if name in ("config-cache.json", "secret.key"):
            return os.path.isfile(path) and os.path.getsize(path) <= (
                32 if name == "secret.key" else 1 << 20)
    except OSError:
        return False
    return _TEMP_OF.fullmatch(name) is not None and os.path.isfile(path)


def _at_or_above(folder: str, root: str) -> Optional[int]:
    """How many levels above ``root`` the folder ``folder`` is (0: it is the root), or None
    when it is neither the root nor above it. Folders are compared by their stat (device and
    inode), so a symlink to the root counts: a stat per level costs a few microseconds, a
    realpath of both (pure Python) some 100 us, on every command."""
    try:
        st = os.stat(folder)
    except (OSError, ValueError):
        return None  # absent: made when first needed, so neither
    here, level = root, 0
    while True:
        try:
            it = os.stat(here)
        except (OSError, ValueError):
            return None
        if it.st_ino == st.st_ino and it.st_dev == st.st_dev:
            return level
        up = os.path.dirname(here)
        if up == here:
            return None
        here, level = up, level + 1


def store_problem(store: str, root: str, default: bool = False) -> Optional[str]:
    """Why the folder ``store`` cannot be the store of the project at ``root``, or None. It
    cannot be the root or a folder above it (``/`` included), nor an existing folder that is
    neither empty nor a zenbuild store (recognised by its zenbuild.db, from any version):
    zenbuild deletes what it takes for its own in its store (STORE/tmp/PID-* of runs no longer
    running, STORE/cas/ on `cache clear`), so a folder of the user's must never be adopted as
    one. ``default``: the store is the .zenbuild no config names (the message says so)."""
    above = _at_or_above(store, root)
    if above is not None:
        what = "the project root" if above == 0 else f"a folder above the project root {root}"
        return (f"the store {store} is {what}: zenbuild keeps its database, blobs and temp "
                "files in its store and deletes those it takes for its own, among your files "
                "there. Point `store` at a folder of its own (the default is .zenbuild in the "
                "project root). A store an earlier zenbuild made there keeps working if you "
                "move its zenbuild.db (and any zenbuild.db-wal and -shm), cas, claims and "
                "secret.key into that folder; or delete them.")
    if os.path.lexists(os.path.join(store, "zenbuild.db")):
        return None  # a store (of this version, an earlier or a newer one: the schema says)
    try:
        names = sorted(os.listdir(store))
    except FileNotFoundError:
        return None  # made when first needed
    except NotADirectoryError:
        return (f"the store {store} is a file, not a folder. Point `store` at a folder "
                "(new or empty), or move the file away.")
    except OSError:
        return None  # unreadable: opening the store says why
    if all(_made_before_database(store, n) for n in names):
        return None  # empty, or a store whose first command stopped before its database
    theirs = [n for n in names if not _made_before_database(store, n)]
    shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
    fix = ("Move that folder away (or rename it), or set `store` in zenbuild.toml to a new or "
           "empty folder" if default else "Point `store` in zenbuild.toml at a new or empty "
           "folder, or move that folder away")
    return (f"the store {store} already exists and is not a zenbuild store: it has no "
            f"zenbuild.db and holds {shown}. zenbuild would write its database there and "
            f"delete files it takes for its own (in its tmp and cas folders). {fix}, and run "
            "again.")


def _check_store(store: str, root: str, fail: Any = None) -> None:
    """Raise ConfigError (exit 2) when ``store`` cannot be the store (store_problem);
    ``fail(message)`` names the config line of ``store = ...``, when it is set."""
    problem = store_problem(store, root, default=fail is None)
    if problem is not None:
        raise fail(problem) if fail is not None else ConfigError(problem)


def _check_one_config(source: str) -> None:
    """Raise ConfigError (exit 2) when a zenbuild.toml has a pyproject.toml with a
    [tool.zenbuild] table beside it: only one is read, and settling silently on zenbuild.toml
    dropped the other's settings (its params changed the results without a word)."""
    if os.path.basename(source) != CONFIG_NAME:
        return
    pp = os.path.join(os.path.dirname(source), "pyproject.toml")
    try:
        with open(pp, "rb") as f:
            raw = f.read()
    except OSError:
        return  # (the usual case: no pyproject.toml, one failed open)
    if b"[tool.zenbuild" not in raw:
        return
    try:
        has = isinstance(_toml().loads(raw.decode("utf-8", "replace")).get("tool", {})
                         .get("zenbuild"), dict)
    except Exception:  # noqa: BLE001 - a pyproject.toml zenbuild cannot parse: not its config
        return
    if has:
        raise ConfigError(
            f"{source} and {pp} both configure zenbuild (pyproject.toml has a [tool.zenbuild] "
            "table), and only one of them would be read. Keep one: move the [tool.zenbuild] "
            "settings into zenbuild.toml and delete that table (and its [tool.zenbuild.*] "
            "sub-tables), or delete zenbuild.toml.")


def load_config(root: str, source: Optional[str]) -> Config:
    """Read and validate the config file (or return defaults when ``source`` is None). The
    store folder is checked here, where every command resolves it (store_problem)."""
    root = os.path.abspath(root)
    if source is None:
        store = os.path.join(root, ".zenbuild")
        _check_store(store, root)
        return Config(root=root, store=store)
    _check_one_config(source)
    import time

    from zenbuild.digest import stat_key

    read_ns = time.time_ns()  # before the read: the racy rule needs the earliest time
    try:
        before = stat_key(os.stat(source))
        with open(source, "rb") as f:
            raw = f.read()
            key = stat_key(os.fstat(f.fileno()))
    except OSError as e:
        raise ConfigError(f"cannot read {source}: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    cache_file = os.path.join(root, ".zenbuild", CONFIG_CACHE)
    data = _cached(cache_file, source, key)
    # a parse is kept only when the file did not change while it was read
    fresh = data is None and key == before
    prefix = "tool.zenbuild" if os.path.basename(source) == "pyproject.toml" else ""
    if data is None:  # the cache holds zenbuild's own table: [tool.zenbuild] already taken out
        tomllib = _toml()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: invalid TOML: {e}") from None
        if prefix:
            data = data.get("tool", {}).get("zenbuild", {})
            if not isinstance(data, dict):
                raise ConfigError(f"{source}: [tool.zenbuild] must be a table")
    c = _Checker(source, text, prefix)
    c.check("", data, _TOP)
    pipelines = data.get("pipelines", [])
    for p in pipelines:
        if not isinstance(p, str) or ":" not in p:
            raise c.fail("", "pipelines", f'each entry must be "module:attribute", got {p!r}')
    fp = data.get("fingerprint", {})
    c.check("fingerprint", fp, _FINGERPRINT)
    for name in fp.get("ignore_env", []):
        if not isinstance(name, str) or not name:
            raise c.fail("fingerprint", "ignore_env",
                         f"each entry must be a variable name or a glob pattern, got {name!r}")
    c.check("watch", data.get("watch", {}), _WATCH)
    c.check("cache", data.get("cache", {}), _CACHE)
    steps: Dict[str, StepSettings] = {}
    for name, table in data.get("steps", {}).items():
        if not isinstance(table, dict):
            raise c.fail("steps", name, "expected a table [steps.NAME]")
        c.check(f"steps.{name}", table, _STEP)
        expires = table.get("cache_expires_after")
        if expires is not None:
            from zenbuild.durations import parse_duration

            try:
                expires = parse_duration(expires)
            except ValueError as e:
                raise c.fail(f"steps.{name}", "cache_expires_after", str(e)) from None
        steps[name] = StepSettings(enable_cache=table.get("enable_cache"),
                                   cache_expires_after=expires)
    jobs = data.get("jobs")
    if jobs is not None and jobs < 1:
        raise c.fail("", "jobs", "expected an integer >= 1")
    cache = data.get("cache", {})
    if "max_size" in cache or "trash_keep" in cache:  # checked here, not first by `cache gc`
        from zenbuild.durations import parse_age, parse_size

        for setting, parse in (("max_size", parse_size), ("trash_keep", parse_age)):
            if setting in cache:
                try:
                    parse(cache[setting])
                except ConfigError as e:
                    raise c.fail("cache", setting, str(e)) from None
    if "timeout_s" in cache and not cache["timeout_s"] > 0:
        raise c.fail("cache", "timeout_s", f"expected seconds > 0, got {cache['timeout_s']!r}")
    on_busy = data.get("watch", {}).get("on_busy")
    if on_busy is not None and on_busy not in ("queue", "restart"):
        raise c.fail("watch", "on_busy", 'expected "queue" or "restart"')
    store = os.path.normpath(os.path.join(root, data.get("store", ".zenbuild")))
    _check_store(store, root, (lambda m: c.fail("", "store", m)) if "store" in data else None)
    if fresh and store == os.path.dirname(cache_file):
        _save_cache(cache_file, source, key, data, read_ns)
    return Config(
        root=root,
        source=source,
        pipelines=tuple(pipelines),
        store=store,
        params=dict(data.get("params", {})),
        steps=steps,
        track_packages=fp.get("packages", True),
        track_reads=fp.get("track_reads", True),
        trace_calls=fp.get("trace_calls", True),
        ignore_env=tuple(fp.get("ignore_env", ())),
        jobs=jobs,
        watch=dict(data.get("watch", {})),
        cache=_cache_paths(dict(data.get("cache", {})), root),
    )


def _cached(cache_file: str, source: str, key: StatKey) -> Optional[Dict[str, Any]]:
    """The parsed content of ``source`` saved by an earlier run, if the file's stat is the
    one it was parsed with and that stat was not racily clean (as for the stat cache)."""
    import json

    from zenbuild.digest import FileRecord

    try:
        with open(cache_file, "rb") as f:
            doc = json.loads(f.read())
        if (doc.get("version") == _CONFIG_CACHE_VERSION and doc.get("source") == source
                and FileRecord(tuple(doc.get("key") or ()), "", int(doc["recorded_ns"])).trusted_for(key)
                and isinstance(doc.get("data"), dict)):
            return doc["data"]  # type: ignore[no-any-return]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _save_cache(
    cache_file: str, source: str, key: StatKey, data: Dict[str, Any], read_ns: int
) -> None:
    """Keep the parse for the next run: only into an existing store folder, written to a temp
    file and renamed; a value JSON cannot hold (a TOML date) means no cache. ``read_ns`` is
    when the file was read (the racy rule compares its mtime with that)."""
    import json

    if not os.path.isdir(os.path.dirname(cache_file)):
        return
    try:
        text = json.dumps({"version": _CONFIG_CACHE_VERSION, "source": source, "key": key,
                           "recorded_ns": read_ns, "data": data})
    except (TypeError, ValueError):
        return
    tmp = f"{cache_file}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, cache_file)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def resolve_pipeline_spec(config: Config, name: Optional[str]) -> str:
    """Turn a CLI PIPELINE argument into "module:attribute"."""
    if name is None:
        if not config.pipelines:
            where = config.source or f"{config.root} (no {CONFIG_NAME} found)"
            raise ConfigError(
                f"no pipeline given and none configured in {where}. Pass one as "
                "`zenbuild run module:attribute`, or list it in zenbuild.toml: "
                'pipelines = ["module:attribute"]'
            )
        return config.pipelines[0]
    if ":" in name:
        return name
    matches: List[str] = [p for p in config.pipelines if p.split(":", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.split(":", 1)[1] for p in config.pipelines) or "none"
    if not matches:
        raise ConfigError(
            f"unknown pipeline {name!r}; configured pipelines: {known}. "
            "Use a configured name or module:attribute."
        )
    raise ConfigError(f"pipeline name {name!r} is ambiguous: {', '.join(matches)}")
