"""What the recorder hooks into the interpreter for every recording (an import's too: a no-op
run records its pipeline module's import).

The environment: ``os._Environ.__getitem__`` (which ``get``, ``in`` and ``os.getenv`` go
through) of ``os.environ`` and of ``os.environb`` (bytes: recorded by the names and values
os.environ shows, os.fsdecode'd) is wrapped while a recording that tracks the environment is
active, and put back when the last one ends (wrap_env, unwrap_env: Recorder calls them). A
variable the step set or deleted before reading it is not its input. A read of the whole
environment (``os.environ.copy()``, ``dict(os.environ)``, items(), iteration; a child process
that inherits it) reads every tracked variable and keeps the set of names (Trace.env_all,
_note_all), not as many reads of its keys one by one.

Files and folders: one ``sys.addaudithook`` per process (hooks cannot be removed), installed
when the first recording of reads starts (install), and a no-op (one truth test) while nothing
records. The ``open`` event covers open(), io.open() and os.open(), its flags telling a read
from a write; ``os.rename`` is a write of its target, ``os.listdir``/``os.scandir`` a listing
(with the digest of the folder's names before the step looked: listing_digest);
``sqlite3.connect`` goes to zenbuild.trace.native; a child process (``subprocess.Popen``,
``os.system``) reads the project files its command line names, and the whole environment when
it inherits it. The thread's own looks that are not the step's (a glob recorded as its
pattern, a listing's digest) run quietly (_quiet/_loud).
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import zenbuild.trace as T
from zenbuild.trace import (
    _ACTIVE,
    _IN_CHILD,
    _LOCK,
    _ORIG_STAT,
    _cwd,
    _from_user,
    _lib,
    _note,
    _Recording,
    _target,
    _up,
    bulk_wanted,
    forks,
    memo,
    unrecorded,
)

# -- environment ----------------------------------------------------------------------------------

_Environ: Any = type(os.environ)
_ORIG_GETITEM = _Environ.__getitem__
_ORIG_SETITEM = _Environ.__setitem__
_ORIG_DELITEM = _Environ.__delitem__
_ORIG_ITER = _Environ.__iter__
_env_users = [0]


def _note_env(key: Any, value: Optional[str]) -> None:
    try:
        rec = _target()
        if rec is None or not rec.opts.track_env or not isinstance(key, str):
            return
        if rec.bulk is not None:
            if rec.bulk_pos < len(rec.bulk) and rec.bulk[rec.bulk_pos] == key:
                rec.bulk_pos += 1  # part of a copy or iteration of the whole environment
                return
            rec.bulk = None
        if key in rec.env or key in rec.env_set:  # the first read decides: repeats are cheap
            if key in rec.env:  # (but a memoized function reading it again must know)
                memo.attribute(rec.root, "env", key, value, sys._getframe(2), _lib())
            return
        if not rec.env_wanted(key) or not _from_user(sys._getframe(2)):
            return
        memo.attribute(rec.root, "env", key, value, sys._getframe(2), _lib())
        r: Optional[_Recording] = rec
        while r is not None and r.opts.track_env:
            if key not in r.env and key not in r.env_set:
                r.env[key] = value
            r = _up(r)
        if _IN_CHILD[0]:
            forks.send("env", key, value)
    except Exception:  # pragma: no cover - never break the step's own look-up
        pass


def _environb() -> Any:
    return getattr(os, "environb", None)  # POSIX only


def _decoded(key: Any) -> Any:
    """An os.environb key or value as os.environ has it (os.fsdecode: the file system encoding,
    surrogateescape); anything else as it is."""
    try:
        return os.fsdecode(key) if isinstance(key, bytes) else key
    except Exception:  # pragma: no cover - an encoding that cannot decode it
        return None


def _env_getitem(self: Any, key: Any) -> Any:
    try:
        value = _ORIG_GETITEM(self, key)
    except KeyError:
        if _ACTIVE:
            if self is os.environ:
                _note_env(key, None)
            elif self is _environb():  # os.environb: bytes names and values
                _note_env(_decoded(key), None)
        raise
    if _ACTIVE:
        if self is os.environ:
            _note_env(key, value)
        elif self is _environb():
            _note_env(_decoded(key), _decoded(value))
    return value


def _env_target(self: Any) -> Optional[_Recording]:
    """The recording a write or iteration of ``self`` goes to: os.environ or os.environb."""
    if _ACTIVE and (self is os.environ or self is _environb()):
        return _target()
    return None


def _env_setitem(self: Any, key: Any, value: Any) -> None:
    _ORIG_SETITEM(self, key, value)
    rec = _env_target(self)
    if rec is not None:
        rec.env_set.add(_decoded(key))


def _env_delitem(self: Any, key: Any) -> None:
    _ORIG_DELITEM(self, key)
    rec = _env_target(self)
    if rec is not None:
        rec.env_set.add(_decoded(key))


def _env_iter(self: Any) -> Iterator[Any]:
    rec = _env_target(self)
    if rec is not None:
        rec.bulk = [_decoded(k) for k in _ORIG_ITER(self)]
        rec.bulk_pos = 0
        if rec.opts.track_env:
            _note_all(rec, sys._getframe(1), rec.bulk)
    yield from _ORIG_ITER(self)


def _note_all(rec: _Recording, caller: Any, names: List[Any]) -> None:
    """The step read the environment whole (iterated it: a copy, items(), a settings class;
    or started a subprocess that inherits it): every tracked variable set now (``names``) is
    a read, and the set of names is kept, so that one set later reruns the step too. The
    first such read decides; a variable the step set itself is its own."""
    try:
        if not _from_user(caller):
            return
        first = rec.env_all is None
        r: Optional[_Recording] = rec
        while r is not None and r.opts.track_env:
            if r.env_all is None:
                wanted = r.env_wanted
                mine = [n for n in names if n is not None and n not in r.env_set
                        and bulk_wanted(n, wanted)]
                r.env_all = sorted(mine)
                for n in mine:
                    if n not in r.env:
                        try:
                            r.env[n] = _ORIG_GETITEM(os.environ, n)
                        except KeyError:  # pragma: no cover - unset by another thread
                            r.env[n] = None
            r = _up(r)
        if _IN_CHILD[0] and first and rec.env_all is not None:  # a forked worker: once
            for n in rec.env_all:
                forks.send("env", n, rec.env.get(n))
            forks.send("env_all", rec.env_all)
    except Exception:  # pragma: no cover - never break the step's own iteration
        pass


class _TracedEnviron(_Environ):  # type: ignore[misc, valid-type]
    """What os.environ (and os.environb) is an instance of while a recording runs: its class is
    swapped (one
    assignment; setting the four methods on os._Environ itself, and back, cost ~25K
    instructions a step: each dunder assignment updates the type's slots)."""

    __getitem__ = _env_getitem
    __setitem__ = _env_setitem
    __delitem__ = _env_delitem
    __iter__ = _env_iter


_TracedEnviron.__name__ = _TracedEnviron.__qualname__ = _Environ.__name__
_TracedEnviron.__module__ = _Environ.__module__
_swapped: List[Any] = []  # the os.environ whose class was swapped, while one is
_patched = [False]  # os.environ is of another class: os._Environ's methods were set instead


def wrap_env() -> None:
    """Record os.environ's reads (and os.environb's) from now on, until as many unwrap_env()."""
    with _LOCK:
        _env_users[0] += 1
        if _env_users[0] == 1:
            envs = [e for e in (os.environ, _environb()) if e is not None]
            if all(type(e) is _Environ for e in envs):  # os.environ, and os.environb (bytes)
                for env in envs:
                    env.__class__ = _TracedEnviron
                    _swapped.append(env)
                return
            _patched[0] = True  # a subclass, or a replacement: as before, on the class
            _Environ.__getitem__ = _env_getitem
            _Environ.__setitem__ = _env_setitem
            _Environ.__delitem__ = _env_delitem
            _Environ.__iter__ = _env_iter


def unwrap_env() -> None:
    with _LOCK:
        _env_users[0] -= 1
        if _env_users[0] <= 0:
            _env_users[0] = 0
            while _swapped:
                env = _swapped.pop()
                if type(env) is _TracedEnviron:
                    env.__class__ = _Environ
            if _patched[0]:
                _patched[0] = False
                _Environ.__getitem__ = _ORIG_GETITEM
                _Environ.__setitem__ = _ORIG_SETITEM
                _Environ.__delitem__ = _ORIG_DELITEM
                _Environ.__iter__ = _ORIG_ITER


# -- files: the audit hook -------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_SEP = os.sep
# thread id -> depth of its own looks under way that are not recorded: listings and existence
# checks a glob recorded as its pattern makes (trace/probes.py), a listing's digest
_QUIET: Dict[int, int] = {}


def _quiet() -> None:
    ident = threading.get_ident()
    _QUIET[ident] = _QUIET.get(ident, 0) + 1


def _loud() -> None:
    ident = threading.get_ident()
    n = _QUIET.get(ident, 0) - 1
    if n > 0:
        _QUIET[ident] = n
    else:
        _QUIET.pop(ident, None)


def _declared_path(rec: _Recording, path: Any) -> bool:
    """Whether ``path`` is an absolute path that rel() maps to a declared input or output (or
    a file inside one) without normalizing it: the paths steps receive. rel()'s own answer
    in fewer steps; anything else (a relative path, bytes, a path with . or //) says False."""
    full = path if type(path) is str else os.fspath(path)
    if type(full) is not str or "/." in full or "//" in full or _SEP != "/":
        return False
    for pre in rec.prefixes:  # the first that matches, as rel() takes it
        if full.startswith(pre):
            rel = full[len(pre):]
            return rel in rec.inputs or rec.declared(rel)
    return False


def _on_open(rec: _Recording, args: Tuple[Any, ...]) -> None:
    path = args[0]
    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
    if rec.alone and type(path) is not int and _declared_path(rec, path):
        rel = rec.rel(path)
        if rel is None or rel not in rec.inputs:
            return  # a declared output: the trace would not keep it (see _Recording.alone)
        if not flags & _WRITE_FLAGS:  # a declared input: this step's key covers it, but a
            # memoized loader's result may reach a step not declaring it
            memo.attribute(rec.root, "reads", rel, None, sys._getframe(2), _lib())
        elif _from_user(sys._getframe(2)) and os.path.lexists(path):
            _note_rewrite(rec, rel)  # the step writes its own declared input
        return
    rel = rec.rel(path)
    if rel is None or rel == ".":
        return
    if rec.dismissed(rel):
        if rel in rec.inputs:
            if not flags & _WRITE_FLAGS:
                memo.attribute(rec.root, "reads", rel, None, sys._getframe(2), _lib())
            elif _from_user(sys._getframe(2)) and os.path.lexists(os.path.join(rec.root, rel)):
                _note_rewrite(rec, rel)
        return  # a declared input or output: the trace would not keep it
    if not _from_user(sys._getframe(2)):
        return
    kind = "writes" if flags & _WRITE_FLAGS else "reads"
    if kind == "reads":
        memo.attribute(rec.root, kind, rel, None, sys._getframe(2), _lib())
    elif rel not in rec.writes and (rel in rec.reads or (
            flags & os.O_RDWR and not flags & (os.O_TRUNC | os.O_APPEND))):
        # read earlier, or opened to read and write in place ("r+", "rb+"), by a step that
        # had not written it before: if it is there now, the step rewrites its own input
        if os.path.lexists(os.path.join(rec.root, rel)):
            _note_rewrite(rec, rel)
    _note(rec, kind, rel)


def _note_rewrite(rec: _Recording, rel: str) -> None:
    """``rel`` existed before the step changed it, and the step had read it: Trace.rewrites."""
    r: Optional[_Recording] = rec
    while r is not None and r.opts.track_reads:
        r.rewrites[rel] = None
        r = _up(r)
    if _IN_CHILD[0]:
        forks.send("rewrites", rel)


def _on_rename(rec: _Recording, args: Tuple[Any, ...]) -> None:
    dst = rec.rel(args[1]) if len(args) > 1 else None
    if dst is not None and _from_user(sys._getframe(2)):
        if (dst in rec.reads and dst not in rec.writes  # a read file replaced (sed -i's way)
                and os.path.lexists(os.path.join(rec.root, dst))):
            _note_rewrite(rec, dst)
        _note(rec, "writes", dst)


def _on_list(rec: _Recording, args: Tuple[Any, ...]) -> None:
    if _QUIET and _QUIET.get(threading.get_ident()):
        return  # inside a glob recorded as its pattern (trace/globs.py)
    path = args[0] if args else None
    rel = rec.rel("." if path is None else path)
    if rel is not None and _from_user(sys._getframe(2)):
        memo.attribute(rec.root, "listed", rel, None, sys._getframe(2), _lib())
        _note_listing(rec, rel)


def _note_listing(rec: _Recording, rel: str) -> None:
    """Folder ``rel`` listed by the step, with its names before the step sees them: one that
    comes while it runs differs from the record (a rerun, never a stale entry)."""
    _note(rec, "listed", rel)
    if rel not in rec.listed_at:
        _quiet()  # (this listing is zenbuild's own)
        try:
            was = listing_digest(rec.root, rel)
        finally:
            _loud()
        r: Optional[_Recording] = rec
        while r is not None and r.opts.track_reads:
            r.listed_at.setdefault(rel, was)
            r = _up(r)


def listing_digest(root: str, rel: str) -> Optional[str]:
    """The digest of a folder's sorted entry names (discovered.py's default ListDigest), None
    when it cannot be listed. A restore's temp file is not content."""
    try:
        names = sorted(n for n in os.listdir(os.path.join(root, rel)) if ".zenbuild-tmp-" not in n)
    except OSError:
        return None
    from zenbuild.digest import digest_bytes

    return digest_bytes("\0".join(names).encode("utf-8", "surrogatepass"))


def _on_sqlite(rec: _Recording, args: Tuple[Any, ...]) -> None:
    (T._NATIVE or T._native()).on_sqlite(rec, args, sys._getframe(2))  # zenbuild.trace.native


_HANDLERS = {"open": _on_open, "os.rename": _on_rename, "os.listdir": _on_list,
             "os.scandir": _on_list, "sqlite3.connect": _on_sqlite}
_installed = [False]


# a child process started without env= inherits the whole environment: (event, index of env)
_SPAWNS = {"subprocess.Popen": 3, "os.system": -1}


def _on_spawn(event: str, args: Tuple[Any, ...]) -> None:
    """A child process started by the step: the project files its command line names are
    read (a script it runs, a data file it is given); started without ``env=`` it inherits,
    so reads, the whole environment. What the child itself opens is not seen."""
    rec = _target()
    if rec is None:
        return
    caller = sys._getframe(2)
    if rec.opts.track_reads:
        _spawn_reads(rec, event, args, caller)
    at = _SPAWNS[event]
    if not rec.opts.track_env or (at >= 0 and (len(args) <= at or args[at] is not None)):
        return  # an env= of its own: built from reads the recorder saw
    _note_all(rec, caller, [_decoded(k) for k in _ORIG_ITER(os.environ)])


def _spawn_reads(rec: _Recording, event: str, args: Tuple[Any, ...], caller: Any) -> None:
    if event == "os.system":
        words: List[Any] = [args[0]] if args else []
        cwd = None
        shell = True
    else:
        argv = args[1] if len(args) > 1 and isinstance(args[1], list) else []
        words = [args[0], *argv] if args and args[0] is not None else list(argv)
        cwd = args[2] if len(args) > 2 else None
        shell = len(argv) >= 3 and argv[1] == "-c" and str(os.fspath(argv[0])).endswith("sh")
    tokens: List[str] = []
    for i, w in enumerate(words):
        try:
            w = os.fsdecode(w)
        except TypeError:
            continue
        if shell and (event == "os.system" or i == len(words) - 1):
            import shlex  # a shell command line: its words (an unbalanced quote: at spaces)

            try:
                tokens += shlex.split(w, comments=True)
            except ValueError:
                tokens += w.split()
        else:
            tokens.append(w)
    base = os.fsdecode(cwd) if cwd is not None else None
    env = args[3] if event != "os.system" and len(args) > 3 else None
    if isinstance(env, dict):  # a path handed over in env= (IN=data/x.csv)
        for v in env.values():
            try:
                tokens.append(os.fsdecode(v))
            except TypeError:
                continue
    outs: Set[str] = set()  # named as an output: `-o FILE`, `--output=FILE`, `> FILE`
    plain: Set[str] = set()  # named otherwise (an input, or one the child edits in place)
    groups: List[List[str]] = []  # each token's candidate paths
    for i, t in enumerate(tokens):
        cands = [t]
        if i > 0 and (tokens[i - 1] in _OUT_OPTIONS or shell and tokens[i - 1] in _REDIRECTS):
            outs.add(t)
        else:
            plain.add(t)
        if "=" in t:  # --data=data/x.csv, dd if=data/x.csv, a Hydra override data.path=...
            opt, value = t.split("=", 1)
            cands.append(value)
            (outs if opt in _OUT_OPTIONS or opt == "of" else plain).add(value)
        if shell and t[:1] in "0123456789&>" and ">" in t[:3]:  # >FILE, 2>>FILE, &>FILE
            target = t.lstrip("0123456789&>|")
            if target and target != t:
                cands.append(target)
                outs.add(target)
        if i > 0 and tokens[i - 1] == "-m" and t and "/" not in t:  # python -m pkg.mod
            mod = t.replace(".", "/")
            cands = [mod + ".py", mod + "/__main__.py"]
        elif shell and any(ch in t for ch in "*?["):  # a shell glob: its matches, and the
            cands = _shell_matches(rec, t, base, caller)  # folder's names (a new match)
        groups.append(cands)
    seen: Set[str] = set()
    for cands in groups:
        for c in cands:
            if not c or "\0" in c or len(c) > 4096 or c in seen:
                continue
            seen.add(c)
            full = c if os.path.isabs(c) or base is None else os.path.join(base, c)
            rel = rec.rel(full)
            if rel is None or rel == "." or rec.dismissed(rel):
                continue
            try:
                st = _ORIG_STAT(os.path.join(rec.root, rel))
            except OSError:  # not there (yet): if the child makes it, it is its write
                if rel not in rec.spawned:
                    if not _from_user(caller):
                        return
                    _spawned(rec, rel, None, False)
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                continue
            if not _from_user(caller):
                return
            was = (st.st_size, st.st_mtime_ns, st.st_ino)
            if c in outs and c not in plain:  # its output: not read (changed: the child's
                _spawned(rec, rel, was, rel in rec.reads)  # write; read before: rewritten)
                continue
            memo.attribute(rec.root, "reads", rel, None, caller, _lib())
            _note(rec, "reads", rel)
            _spawned(rec, rel, was, True)


# options whose next word is the file a command writes (sort, gcc, curl -o; wget -O; pandoc
# --output); the shell's redirections
_OUT_OPTIONS = frozenset({"-o", "-O", "--output", "--out", "--outfile", "--output-file",
                          "--output-document", "-output"})
_REDIRECTS = frozenset({">", ">>", "1>", "1>>", "2>", "2>>", "&>", "&>>", ">|"})


def _spawned(rec: _Recording, rel: str, was: Any, read: bool) -> None:
    """A file a child process is given, with its stat now (None: not there yet): one it
    changes is its write, or, if it was there and read (``read``: given as an input, or
    read by the step before), its rewrite (recording.finish)."""
    r: Optional[_Recording] = rec
    while r is not None and r.opts.track_reads:
        r.spawned.setdefault(rel, was)
        if read and was is not None:
            r.spawn_in.add(rel)
        r = _up(r)


def _shell_matches(rec: _Recording, pattern: str, base: Optional[str], caller: Any) -> List[str]:
    """The files a shell glob of one folder (``data/y*.csv``) matches, relative as given; the
    folder counts as listed by the step (a file added that matches reruns it). A pattern in a
    folder name is not expanded."""
    import fnmatch

    folder, name = os.path.split(pattern)
    if any(ch in folder for ch in "*?[") or not name:
        return []
    full = folder or "."
    if base is not None and not os.path.isabs(full):
        full = os.path.join(base, full)
    try:
        names = unrecorded(os.listdir, full)
    except OSError:
        return []
    rel = rec.rel(full)
    if rel is not None and _from_user(caller):
        _note_listing(rec, rel)
    hidden = name.startswith(".")  # the shell's rule: * matches no leading dot
    return [os.path.join(folder, n) for n in fnmatch.filter(names, name)
            if hidden or not n.startswith(".")]


def _hook(event: str, args: Tuple[Any, ...]) -> None:
    if not _ACTIVE:
        return
    if event == "os.chdir":
        _cwd[0] = None
        return
    handler = _HANDLERS.get(event)
    if handler is None:
        if event in _SPAWNS:
            try:
                _on_spawn(event, args)
            except Exception:  # pragma: no cover - never fail the user's call
                pass
        return
    try:
        rec = _target()
        if rec is not None and rec.opts.track_reads:
            handler(rec, args)
    except Exception:  # an audit hook that raises would fail the user's open()
        pass


def install() -> None:
    """Install the audit hook (once a process: a hook cannot be removed; a no-op while nothing
    records)."""
    if _installed[0]:
        return
    with _LOCK:
        if not _installed[0]:
            sys.addaudithook(_hook)
            _installed[0] = True
            forks.install(_ACTIVE)  # what forked workers of a step read reaches its trace
