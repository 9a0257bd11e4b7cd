"""Discovered dependencies: a step's Trace turned into the record kept on its action entry
(digests only, no secret values), and the verifying check of that record on a later run, which
returns Reasons. Pure functions: every look-up (file digests, code digests, folder listings,
the environment) is passed in, so rebuild.decide() and the tests choose the I/O.

The stored record (JSON, the ``discovered`` column of the entry's row and the ``discovered``
key of a remote-cache entry; an entry with nothing to verify stores none), format 2 (format
1, written before closures, globs and modules, is read only when it holds no calls)::

    {"format": 2,
     "files":  {rel: [digest, size] | null},      # null: tried, but did not exist
     "listed": {rel: digest | null},              # digest of the sorted names
     "globs":  [[kind, base, pattern, opts, digest | null], ...],  # optional: listings through
                                                  # a pattern (trace/globs.py), their matches
     "env":    {name: [digest | null, display | null]},  # hidden: ["k:" keyed digest, null]
     "env_all": [name, ...],                      # optional: the variables set when the step
                                                  # read os.environ whole (their values: "env";
                                                  # none for the ones the step set itself)
     "calls":  [[file, qualname, firstlineno, digest | null, closure | null], ...],
     "sources": {file: digest | null},            # the files of the calls, as a shortcut
     "modules": {file: [digest, source] | null},  # project modules the step used (below)
     "types":  [[module, qualname, digest], ...],  # optional: see below
     "subclasses": [[module, qualname, [[module, qualname, digest | null, imported], ...]],
                    ...]}
                                                  # optional: see below

"types" (read as empty when absent) is a trace of the value, not of the
run: the classes whose registered project code (register_value_type's reducer, @value_type's
save and load) encoded the stored value, each with the code digest it had then (the
fingerprinter's value_code: a project class's code with its registration, or the project
code registered for a library class). An entry is served only while each digest is the one
that code has now: a producer whose static key never names the type (a library function
returning a pandas DataFrame, a helper building an instance from a plugin) reruns when that
code changes. A version before this section ignores it (as it always missed the change).

"subclasses" (read as empty when absent): the classes the step asked for their subclasses
(``Base.__subclasses__()``: trace/subclasses.py), each with its named project subclasses at
any depth when the step ended and each one's class digest (fingerprint/subclasses.py, as the
static key counts a class); ``imported``: its module was imported while the step ran, so the
check imports it first (the others must still be loaded by the pipeline's own imports: a
plugin import removed is a change). Served only while each class has the same subclasses
with the same digests; a version before this section ignores it (as it always missed it).

``closure`` is the digest of the function's code closure as the static fingerprinter sees it
(the globals, constants, aliases and library identities it refers to, transitively:
fingerprint/traced.py), checked on every verify; the AST ``digest`` alone missed an edit to a
constant imported from another module or a re-bound alias. ``modules``: the project modules the
step imported or touched as module objects (trace.modules) that the static key does not reach
into (a constants-only config module chosen by name, ``sys.modules["h"].K``), by file digest
(the shortcut: one stat on a no-op) and normalized source digest (docstrings, comments and
formatting aside, as the static fingerprint treats a module), parsed only when the file changed.
Format 1 (no closures) is read only when it holds no calls; one with
calls cannot be verified fully, so its step runs again once.
"""

from __future__ import annotations

import os
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Container,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

if TYPE_CHECKING:  # ast is imported where a source is parsed: a no-op parses nothing
    import ast

from zenbuild import reasons as R
from zenbuild.digest import StatCache, digest_bytes
from zenbuild.reasons import Reason
from zenbuild.trace import Trace, bulk_wanted, env_filter, is_hidden, keyed_digest, secret_key
from zenbuild.trace import listing_digest as trace_listing_digest

DISCOVERED_FORMAT = 2  # format 1 (no closures; before globs, modules) is read without calls

# A failed verification gives reasons of the kinds R.READ_FILE_CHANGED, R.READ_FILE_MISSING,
# R.READ_FILE_APPEARED, R.LISTED_DIR_CHANGED, R.GLOB_MATCHES_CHANGED, R.ENV_READ_CHANGED,
# R.TRACED_CODE_CHANGED, R.TRACED_CODE_MISSING, R.VALUE_TYPE_CODE_CHANGED, R.VALUE_TYPE_MISSING
# and R.SUBCLASSES_CHANGED (defined, with their text, beside every other kind in zenbuild.reasons).

FileDigest = Callable[[str], Optional[Tuple[str, int]]]  # rel -> (digest, size), None: no file
CodeDigest = Callable[[str, str, int], Optional[str]]  # (file, qualname, firstlineno) -> digest
ListDigest = Callable[[str], Optional[str]]  # rel folder -> digest of its names, None: gone
GlobDigest = Callable[[List[Any]], Optional[str]]  # glob spec -> digest of its matches
# (module, qualname) of a registered class -> (whether it exists, its code digest or None)
TypeDigest = Callable[[str, str], Tuple[bool, Optional[str]]]
ModuleDigest = Callable[[str], Optional[str]]  # rel .py -> normalized source digest, None: gone
# the rel .py of the used modules -> (the files and variables they and the project modules
# their globals come from read when imported, those other modules' rel .py)
ModuleReads = Callable[[List[str]], Tuple[List[str], Dict[str, Optional[str]], List[str]]]
# (module, qualname) of a project class -> its class digest, None: not found or not analyzable
ClassDigest = Callable[[str, str], Optional[str]]
# (module, qualname) of a class -> [[module, qualname], ...] of its named project subclasses
# now, None: the class cannot be found
SubclassesNow = Callable[[str, str], Optional[List[List[str]]]]

MAX_DISPLAY = 80


def env_digest(value: Optional[str]) -> Optional[str]:
    return None if value is None else digest_bytes(value.encode("utf-8", "surrogatepass"))


SecretDigest = Callable[[str], str]  # a hidden value -> its keyed digest ("k:...")
_PROCESS_KEY: List[bytes] = []


def _process_digest(value: str) -> str:
    """The SecretDigest of build()/verify() called without one: keyed by a key of this process
    only (never an unkeyed digest), so a record made elsewhere never verifies as unchanged."""
    if not _PROCESS_KEY:
        _PROCESS_KEY.append(os.urandom(32))
    return keyed_digest(_PROCESS_KEY[0], value)


def env_entry(name: str, value: Optional[str], secret_digest: SecretDigest) -> List[Any]:
    """A variable's [digest, display] in the record: a hidden value (trace.is_hidden: a
    secret-looking name, or a value that looks like a credential) as [keyed digest, None]."""
    if value is not None and is_hidden(name, value):
        return [secret_digest(value), None]
    return [env_digest(value), env_display(name, value)]


def env_display(name: str, value: Optional[str]) -> Optional[str]:
    """What explain may show of a variable's value: nothing for a hidden one."""
    if value is None or is_hidden(name, value):
        return None
    return value if len(value) <= MAX_DISPLAY else value[: MAX_DISPLAY - 3] + "..."


listing_digest = trace_listing_digest  # the default ListDigest: of a folder's sorted names


def _covered(skip: Set[Tuple[str, str]], f: str, q: str) -> bool:
    """Whether the static key covers function ``q`` of file ``f``: it names it, or a function
    or class that encloses it (a nested def, a method)."""
    if (f, q) in skip:
        return True
    parts = q.split(".")
    return any((f, ".".join(parts[:i])) in skip for i in range(1, len(parts)))


def static_calls(code_meta: Mapping[str, List[str]]) -> Set[Tuple[str, str]]:
    """(file, qualname) pairs a step's static code items cover, from their keys
    ("module.qualname") and files: every dotted suffix of a key, so no module name is needed."""
    out: Set[Tuple[str, str]] = set()
    for key, meta in code_meta.items():
        f = meta[1] if len(meta) > 1 else ""
        if not f:
            continue
        parts = key.split("#", 1)[0].split(" ", 1)[0].split(".")
        for i in range(len(parts)):
            out.add((f, ".".join(parts[i:])))
    return out


def static_files(code_meta: Mapping[str, List[str]]) -> Set[str]:
    """The project files a step's static code items come from (their file labels)."""
    return {meta[1] for meta in code_meta.values() if len(meta) > 1 and meta[1]}


def build(trace: Trace, file_digest: FileDigest, code_digest: CodeDigest,
          list_digest: Optional[ListDigest] = None,
          skip_calls: Iterable[Tuple[str, str]] = (),
          skip_files: Container[str] = (),
          secret_digest: SecretDigest = _process_digest,
          glob_digest: Optional[GlobDigest] = None,
          skip_modules: Container[str] = (),
          closure_digest: Optional[CodeDigest] = None,
          module_digest: Optional[ModuleDigest] = None,
          module_reads: Optional[ModuleReads] = None,
          class_digest: Optional[ClassDigest] = None) -> Dict[str, Any]:
    """The record to store for ``trace`` (taken right after the step ran). ``skip_calls``:
    (file, qualname) pairs the static key already covers (the step function itself, helpers
    it names, and what they enclose), which need no second check; ``skip_files``: files the
    static key covers (declared inputs). ``sources`` holds the digest of each file a traced
    function lives in: while it is the same, none of its functions needs parsing again.
    ``glob_digest`` digests what a recorded pattern matches (a record holding any is format
    2); without one, as without ``list_digest``, listings are not kept. ``module_reads``
    gives the files and variables a used module read when it was imported (its top level
    ran then, not while the step did): they are recorded as the step's own reads."""
    skip = set(skip_calls)
    files: Dict[str, Optional[List[Any]]] = {}
    for rel in trace.reads:
        if rel in skip_files:
            continue
        d = file_digest(rel)
        files[rel] = None if d is None else [d[0], d[1]]
    modules: Dict[str, Optional[List[str]]] = {}
    if module_digest is not None:
        for rel in trace.modules:
            if rel not in files and rel not in skip_modules and rel not in skip_files:
                d, src = file_digest(rel), module_digest(rel)
                modules[rel] = None if d is None or src is None else [d[0], src]
    import_env: Dict[str, Optional[str]] = {}
    if modules and module_reads is not None and module_digest is not None:
        # (the static key holds what the modules it reaches read)
        reads, import_env, more = module_reads(list(modules))
        for m in more:  # their top level ran these modules' code: checked by source too
            if m not in modules and m not in files and m not in skip_modules \
                    and m not in skip_files:
                d, src = file_digest(m), module_digest(m)
                modules[m] = None if d is None or src is None else [d[0], src]
        for read in reads:
            if read not in files and read not in skip_files:
                d = file_digest(read)
                files[read] = None if d is None else [d[0], d[1]]
    # a folder's digest as the recorder took it before the step listed it, else now
    at = trace.listed_at
    listed = ({rel: at[rel] if rel in at else list_digest(rel) for rel in trace.listed}
              if list_digest is not None else {})
    env = {name: env_entry(name, v, secret_digest)
           for name, v in {**import_env, **trace.env}.items()}
    calls = [[f, q, line, code_digest(f, q, line),
              closure_digest(f, q, line) if closure_digest is not None else None]
             for f, q, line in trace.calls if not _covered(skip, f, q)]
    sources: Dict[str, Optional[str]] = {}
    for f, *_rest in calls:
        if f not in sources and f != "<__main__>":
            got = file_digest(f)
            sources[f] = None if got is None else got[0]
    out = {"format": DISCOVERED_FORMAT, "files": files, "listed": listed, "env": env,
           "calls": calls, "sources": sources, "modules": modules}
    if trace.env_all is not None:
        out["env_all"] = list(trace.env_all)
    if trace.globs and glob_digest is not None:
        # the digest taken when the step made the call (trace/probes.py: _note_glob), else now
        out["globs"] = [[*g[:4], g[4] if len(g) == 5 else glob_digest(g[:4])]
                        for g in trace.globs]
    if trace.subclasses and class_digest is not None:
        out["subclasses"] = [[m, q, [[sm, sq, class_digest(sm, sq), bool(imp)]
                                     for sm, sq, imp in subs]]
                             for m, q, subs in trace.subclasses]
    return out


def is_empty(record: Mapping[str, Any]) -> bool:
    """Whether a record verifies nothing (then the entry stores none: nothing to check)."""
    return not (record.get("files") or record.get("listed") or record.get("env")
                or record.get("env_all") is not None
                or record.get("calls") or record.get("globs") or record.get("types") or record.get("modules")
                or record.get("subclasses"))


def with_types(record: Optional[Dict[str, Any]],
               types: List[List[Any]]) -> Optional[Dict[str, Any]]:
    """``record`` (or a new, otherwise empty one) with the value's "types" section; ``record``
    itself when there are none, so a value that used no registered type adds nothing."""
    if not types:
        return record
    if record is None:
        record = {"format": DISCOVERED_FORMAT, "files": {}, "listed": {}, "env": {},
                  "calls": [], "sources": {}}
    record["types"] = types
    return record


def _is_digest(v: Any) -> bool:
    return v is None or type(v) is str


def _outside(rel: Any) -> bool:
    """Whether a record's path is no project-relative path (absolute, ``..``, a NUL, not text):
    a record only names files under the root (the recorder drops the others), so one that
    names ``../../dev/zero`` was forged, and checking it would read outside the project."""
    if type(rel) is not str or not rel or rel[0] == "/" or "\0" in rel or len(rel) > 4096:
        return True
    if ".." not in rel:
        return False
    import posixpath  # (a call's label may be "sub/../pipe.py": a sys.path entry "sub/..")

    norm = posixpath.normpath(rel)
    return norm == ".." or norm.startswith("../")


def malformed(record: Any) -> Optional[str]:
    """What is wrong with a stored record (its shape), or None. A record
    verify() cannot fully check must never let its entry be served."""
    if not isinstance(record, dict):
        return "not an object"
    if record.get("untrusted", False) is not True and "untrusted" in record:
        return "its trust mark"
    fmt = record.get("format")
    if fmt != DISCOVERED_FORMAT and not (fmt == 1 and not record.get("calls")):
        return f"format {fmt!r}, this version reads {DISCOVERED_FORMAT}"
    files, listed, env = record.get("files", {}), record.get("listed", {}), record.get("env", {})
    calls, sources = record.get("calls", []), record.get("sources") or {}
    modules = record.get("modules") or {}
    if not (isinstance(files, dict) and isinstance(listed, dict) and isinstance(env, dict)
            and isinstance(calls, list) and isinstance(sources, dict)
            and isinstance(modules, dict)):
        return "a section of the wrong type"
    for rel, was in modules.items():
        if _outside(rel) or was is not None and not (type(was) is list and len(was) == 2
                                                     and all(type(x) is str for x in was)):
            return f"module {str(rel)[:200]!r}"
    for rel, was in files.items():
        if _outside(rel) or was is not None and not (
                type(was) is list and len(was) == 2 and type(was[0]) is str
                and type(was[1]) is int):
            return f"file {str(rel)[:200]!r}"
    for rel, was in listed.items():
        if _outside(rel) or not _is_digest(was):
            return f"folder {str(rel)[:200]!r}"
    for name, was in env.items():
        if not (type(was) is list and len(was) == 2 and _is_digest(was[0])
                and _is_digest(was[1])):
            return f"variable {name!r}"
    for c in calls:
        if not (type(c) is list and len(c) == 5 and type(c[0]) is str and type(c[1]) is str
                and type(c[2]) is int and _is_digest(c[3]) and _is_digest(c[4])):
            return "a call"
        if _outside(c[0]) and c[0] != "<__main__>":
            return f"a call in {c[0][:200]!r}"
    if not all(_is_digest(v) for v in sources.values()):
        return "a source"
    for f in sources:
        if _outside(f) and f != "<__main__>":
            return f"a source {str(f)[:200]!r}"
    env_all = record.get("env_all")
    if env_all is not None and not (type(env_all) is list
                                    and all(type(n) is str for n in env_all)):
        return "the whole-environment read"
    globs = record.get("globs", [])
    if globs and record.get("format") == 1:  # format 1 never had patterns
        return "format 1 with patterns"
    if not isinstance(globs, list):
        return "a section of the wrong type"
    if globs:  # (imported only for a record that has patterns: a no-op mostly meets none)
        from zenbuild.trace import globs as G
    for g in globs:
        if not (type(g) is list and len(g) == 5 and G.valid(g[:4]) and _is_digest(g[4])):
            return "a pattern"
    types = record.get("types", [])
    if not isinstance(types, list):
        return "a section of the wrong type"
    for t in types:
        if not (type(t) is list and len(t) == 3 and type(t[0]) is str and type(t[1]) is str
                and _is_digest(t[2])):
            return "a value type"
    subclasses = record.get("subclasses", [])
    if not isinstance(subclasses, list):
        return "a section of the wrong type"
    for e in subclasses:
        if not (type(e) is list and len(e) == 3 and type(e[0]) is str and type(e[1]) is str
                and type(e[2]) is list
                and all(type(x) is list and len(x) == 4 and type(x[0]) is str
                        and type(x[1]) is str and _is_digest(x[2]) and type(x[3]) is bool
                        for x in e[2])):
            return "a class's subclasses"
    return None


def verify(record: Mapping[str, Any], file_digest: FileDigest, environ: Mapping[str, str],
           code_digest: CodeDigest, list_digest: Optional[ListDigest] = None,
           first_only: bool = False,
           env_wanted: Optional[Callable[[str], bool]] = None,
           secret_digest: SecretDigest = _process_digest,
           glob_digest: Optional[GlobDigest] = None,
           type_digest: Optional[TypeDigest] = None,
           closure_digest: Optional[CodeDigest] = None,
           module_digest: Optional[ModuleDigest] = None,
           class_digest: Optional[ClassDigest] = None,
           subclasses_now: Optional[SubclassesNow] = None) -> List[Reason]:
    """Why a stored entry may no longer be served, judged by what its step touched last time.
    Empty: still valid. ``first_only`` stops at the first reason (run), else all (explain).
    ``env_wanted``: the variables still tracked (one now in ``ignore_env`` is not checked).
    The functions of a file whose digest is the one in ``sources`` are not parsed again.
    A record with patterns (``globs``) and no ``glob_digest`` to check them is not trusted.
    ``type_digest`` gives the code digest a registered class has now (without it, a record
    naming one never verifies). ``class_digest`` and ``subclasses_now`` check "subclasses"
    (without them, a record holding the section is not trusted)."""
    out: List[Reason] = []
    if not record:
        return out
    problem = malformed(record)
    if problem is not None:  # a damaged row, or a store shared with another version: the
        return [Reason(R.RECORD_UNREADABLE, after=problem)]  # entry cannot be trusted

    def add(r: Reason) -> bool:
        out.append(r)
        return first_only

    for rel, was in record.get("files", {}).items():
        now = file_digest(rel)
        if was is None and now is not None:
            if add(Reason(R.READ_FILE_APPEARED, rel, None, now[1])):
                return out
        elif was is not None and now is None:
            if add(Reason(R.READ_FILE_MISSING, rel, was[1], None)):
                return out
        elif was is not None and now is not None and now[0] != was[0]:
            if add(Reason(R.READ_FILE_CHANGED, rel, was[1], now[1])):
                return out
    for name, (was_digest, was_display) in record.get("env", {}).items():
        if env_wanted is not None and not env_wanted(name):
            continue
        value = environ.get(name)
        # a hidden value compares by its keyed digest: one keyed elsewhere (a remote entry made
        # with another store's key) or unkeyed (an older record) differs, so the step reruns
        seen = env_entry(name, value, secret_digest)
        if seen[0] != was_digest:
            secret = ((value is not None and seen[1] is None)
                      or (was_digest is not None and was_display is None))
            r = Reason(R.ENV_READ_CHANGED, name, None if secret else was_display,
                       None if secret else seen[1], {"secret": secret})
            if add(r):
                return out
    env_all = record.get("env_all")
    if env_all is not None:  # read whole: a tracked variable set since is a change too
        wanted = env_wanted or env_filter(())
        known = set(env_all)
        for name in sorted(n for n in environ if n not in known and bulk_wanted(n, wanted)):
            seen = env_entry(name, environ.get(name), secret_digest)
            if add(Reason(R.ENV_READ_CHANGED, name, None, seen[1],
                          {"secret": seen[1] is None, "whole": True})):
                return out
    if list_digest is not None:
        for rel, was in record.get("listed", {}).items():
            if list_digest(rel) != was and add(Reason(R.LISTED_DIR_CHANGED, rel)):
                return out
    globs = record.get("globs") or []
    if globs and glob_digest is None:
        return out + [Reason(R.RECORD_UNREADABLE, after="its patterns cannot be checked here")]
    if globs:
        from zenbuild.trace import globs as G
    for g in globs:
        spec = g[:4]
        if glob_digest is not None and glob_digest(spec) != g[4]:
            if add(Reason(R.GLOB_MATCHES_CHANGED, G.display(spec))):
                return out
    for rel, mwas in (record.get("modules") or {}).items():
        got = file_digest(rel)
        if mwas is not None and got is not None and got[0] == mwas[0]:
            continue  # the file is the same: nothing to parse
        src = None if got is None or module_digest is None else module_digest(rel)
        if (mwas is None) != (src is None) or (mwas is not None and src != mwas[1]):
            if add(Reason(R.USED_MODULE_CHANGED, rel)):
                return out
    sources = record.get("sources") or {}
    same: Dict[str, bool] = {}
    for f, q, line, was, closure in record.get("calls", []):
        if closure_digest is not None:
            # what the function refers to (a constant in another module, an alias): checked
            # even when its own file is unchanged. A null closure that has a digest now was
            # recorded by a version that could not find the code (a nested def, a lambda)
            closure_now = closure_digest(f, q, line)
            if closure_now != closure:
                if add(Reason(R.TRACED_CODE_CHANGED, f"{f}:{q}",
                              detail={"file": f, "line": line})):
                    return out
                continue
        if f in sources:
            ok = same.get(f)
            if ok is None:
                got = file_digest(f)
                ok = same[f] = got is not None and got[0] == sources[f]
            if ok:
                continue
        code_now = code_digest(f, q, line)
        subject = f"{f}:{q}"
        if code_now is None and was is not None:
            if add(Reason(R.TRACED_CODE_MISSING, subject, detail={"file": f, "line": line})):
                return out
        elif code_now != was:
            if add(Reason(R.TRACED_CODE_CHANGED, subject, detail={"file": f, "line": line})):
                return out
    for module, qualname, was in record.get("types", []):
        found, now_code = type_digest(module, qualname) if type_digest is not None else (
            False, None)
        if now_code == was:
            continue
        kind = R.VALUE_TYPE_CODE_CHANGED if found else R.VALUE_TYPE_MISSING
        if add(Reason(kind, f"{module}.{qualname}")):
            return out
    subclasses = record.get("subclasses") or []
    if subclasses and (class_digest is None or subclasses_now is None):
        return out + [Reason(R.RECORD_UNREADABLE, after="its subclasses cannot be checked here")]
    for r in subclass_changes(subclasses, class_digest, subclasses_now):  # type: ignore[arg-type]
        if add(r):
            return out
    return out


def subclass_changes(section: List[List[Any]], class_digest: ClassDigest,
                     subclasses_now: SubclassesNow) -> Iterable[Reason]:
    """A SUBCLASSES_CHANGED reason for each class of a record's "subclasses" section whose
    named project subclasses, or their digests, are not the recorded ones. A subclass whose
    module the step imported is digested (its module imported) before the class's subclasses
    are listed, as the step had that module loaded; the others only if they are still there."""
    for module, qualname, subs in section:
        digests = {(m, q): class_digest(m, q) for m, q, _, imported in subs if imported}
        now = subclasses_now(module, qualname)
        subject = f"{module}.{qualname}"
        if now is None:
            yield Reason(R.SUBCLASSES_CHANGED, subject, detail={"gone": True})
            continue
        was_names = {(m, q) for m, q, _, _ in subs}
        now_names = {(m, q) for m, q in now}
        added = sorted(f"{m}.{q}" for m, q in now_names - was_names)
        removed = sorted(f"{m}.{q}" for m, q in was_names - now_names)
        changed = sorted(f"{m}.{q}" for m, q, d, _ in subs if (m, q) in now_names
                         and (digests[(m, q)] if (m, q) in digests else class_digest(m, q)) != d)
        if added or removed or changed:
            yield Reason(R.SUBCLASSES_CHANGED, subject,
                         detail={"added": added, "removed": removed, "changed": changed})


# -- the I/O a run uses -------------------------------------------------------------------------


def digest_at(statcache: StatCache, root: str, path: Optional[str]) -> Optional[Tuple[str, int]]:
    """(digest, size) of the file at ``path`` (project-relative, through ``statcache``, or
    absolute: outside the project), None when there is none."""
    if path is None:
        return None
    try:
        if os.path.isabs(path):
            from zenbuild.digest import digest_file

            return digest_file(path)
        return statcache.digest(path, os.path.join(root, path))
    except OSError:
        return None


def _names_digest(names: Optional[List[str]]) -> Optional[str]:
    """The digest of sorted names, as trace.listing_digest and trace.globs.digest make it."""
    if names is None:
        return None
    return digest_bytes("\0".join(names).encode("utf-8", "surrogatepass"))


def _listed(root: str, rel: str) -> Optional[List[str]]:
    """The sorted names in folder ``rel`` as trace.listing_digest takes them, None if it
    cannot be listed."""
    try:
        return sorted(n for n in os.listdir(os.path.join(root, rel)) if ".zenbuild-tmp-" not in n)
    except OSError:
        return None


class Discovery:
    """build() and verify() with a run's look-ups: file digests through the run's StatCache
    (a no-op costs one stat per discovered file), folder listings, this process's environment
    filtered by the deny-list and ``ignore_env``, one SourceDigests per run (made only when
    a traced function's file changed), and the store's key for hidden values (read when one is
    first met, from the store folder ``store``)."""

    def __init__(self, root: str, statcache: StatCache, ignore_env: Iterable[str] = (),
                 environ: Optional[Mapping[str, str]] = None, *, store: str,
                 type_digest: Optional[TypeDigest] = None) -> None:
        self.root = root
        self.type_digest = type_digest  # the code registered for a class, now
        self.store = store
        self._key: Optional[bytes] = None
        self.statcache = statcache
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.env_wanted = env_filter(ignore_env)
        self._prefix = root.rstrip(os.sep) + os.sep
        self._code: Optional[SourceDigests] = None
        self._skip: Optional[Tuple[str, ...]] = None  # the store, for glob digests
        # (file, qualname, firstlineno) -> the closure digest of the live function (the
        # scheduler's fingerprinter: fingerprint/traced.py), None: not checked
        self.closure_digest: Optional[CodeDigest] = None
        # the subclasses a step found through __subclasses__(): fingerprint/subclasses.py's
        # SubclassDigests (its digest and now), None: not recorded
        self.subclasses: Any = None
        # a dry run's overlay.OutputOverlay: the outputs it pretends to have restored (and the
        # files it pretends to have removed), which what a step read, listed or globbed last
        # time is compared with, as a real run compares it after restoring them
        self.overlay: Any = None
        self._mirror: Any = None  # overlay.Mirror, made at a dry run's first listing
        self._mirror_dir: Any = None  # the TemporaryDirectory holding it

    def file_digest(self, rel: str, st: Optional[os.stat_result] = None) -> Optional[Tuple[str, int]]:
        over = self.overlay
        if over is not None and over.active():  # a dry run: what its restores would leave
            hit, path = over.where(self.root, rel)
            if hit is not None:
                return hit[0], hit[1]
            if path != rel:  # removed, a loop of links (None), or where a link leads
                return digest_at(self.statcache, self.root, path)
        try:
            return self.statcache.digest(rel, self._prefix + rel, st)
        except OSError:  # gone, a folder, unreadable: "no such file" to the record
            return None

    def list_digest(self, rel: str) -> Optional[str]:
        handled, got = self._merged(rel, _listed)
        return _names_digest(got) if handled else listing_digest(self.root, rel)

    def glob_digest(self, spec: List[Any]) -> Optional[str]:
        from zenbuild.trace.globs import digest, names, skipped

        if self._skip is None:
            self._skip = skipped(self.root, self.store)
        skip = self._skip
        if type(spec[1]) is str:
            handled, got = self._merged(spec[1], lambda root, base: names(
                root, [spec[0], base, *spec[2:]], skip))
            if handled:
                return _names_digest(got)
        return digest(self.root, spec, skip)

    def _merged(self, base: str, names_at: Callable[[str, str], Optional[List[str]]]
                ) -> Tuple[bool, Optional[List[str]]]:
        """In a dry run that pretends restores at, under or above folder ``base``: (True, the
        names ``names_at(root, folder)`` gives relative to it as a real run would find them
        after the restores, None for no such folder), else (False, None): the disk answers.
        A name at or under a pretended path is the mirror's (overlay.Mirror), every other
        one the disk's; ``base`` is taken with its links followed (those the restores make
        and those on disk). Not followed: a link a pattern crosses below ``base`` between
        the disk and what is pretended (``data/*/x`` through a link ``data/cur`` into a
        restored folder); there the dry run can say "would execute" where the run serves,
        or miss a file the restore removes."""
        over = self.overlay
        if over is None or not over.active():
            return False, None
        real = over.canonical(self.root, base)
        if real is None or os.path.isabs(real):
            return False, None
        if not over.related(real):  # the disk answers, where the links lead after the restores
            return (False, None) if real == base else (True, names_at(self.root, real))
        if self._mirror is None:
            import tempfile

            from zenbuild.overlay import Mirror

            self._mirror_dir = tempfile.TemporaryDirectory(prefix="zenbuild-dry-run-")
            self._mirror = Mirror(self.root, over, self._mirror_dir.name)
        mine = names_at(self._mirror.ready(), real)
        disk = None if over.changed(real) else names_at(self.root, real)
        if disk is None and mine is None:
            return True, None
        lead = "" if real == "." else real + "/"
        out = set(mine or ())
        for n in disk or ():
            p = n.rstrip("/")
            if not over.changed(real if p in ("", ".") else lead + p):
                out.add(n)
        return True, sorted(out)

    def close(self) -> None:
        """Remove the dry run's mirror, if one was made."""
        if self._mirror_dir is not None:
            self._mirror_dir.cleanup()
            self._mirror_dir = self._mirror = None

    def secret_digest(self, value: str) -> str:
        if self._key is None:
            self._key = secret_key(self.store)
        return keyed_digest(self._key, value)

    def code_digest(self, file: str, qualname: str, firstlineno: int) -> Optional[str]:
        if self._code is None:
            self._code = SourceDigests(self.root)
        return self._code(file, qualname, firstlineno)

    def module_digest(self, rel: str) -> Optional[str]:
        if self._code is None:
            self._code = SourceDigests(self.root)
        return self._code.module(rel)

    def build(self, trace: Trace, skip_calls: Iterable[Tuple[str, str]] = (),
              skip_files: Container[str] = (),
              skip_modules: Container[str] = ()) -> Optional[Dict[str, Any]]:
        """The record to store, or None when there is nothing to verify."""
        rec = build(trace, self.file_digest, self.code_digest, self.list_digest, skip_calls,
                    skip_files, self.secret_digest, self.glob_digest, skip_modules,
                    self.closure_digest, self.module_digest, self.module_reads,
                    self.subclasses.digest if self.subclasses is not None else None)
        return None if is_empty(rec) else rec

    def module_reads(self, rels: List[str]
                     ) -> Tuple[List[str], Dict[str, Optional[str]], List[str]]:
        """What the project modules ``rels`` read when they were imported, files and
        variables, and what the project modules their globals come from read when they were
        (``CFG = make_cfg()`` with ``make_cfg`` from a module that read ``common.json``):
        their top level ran with those; and those other modules (rel .py)."""
        from zenbuild import imported

        reads: Dict[str, None] = {}
        env: Dict[str, Optional[str]] = {}
        base = os.path.realpath(self.root)
        starts = [os.path.realpath(os.path.join(self.root, rel)) for rel in rels]
        tree = self._module_tree(starts)
        for real in tree:
            reads.update(dict.fromkeys(imported.reads_of(real)))
            for name, value in imported.import_env(real).items():
                env.setdefault(name, value)
        first = set(starts)
        more = [os.path.relpath(real, base).replace(os.sep, "/") for real in tree
                if real not in first]
        return list(reads), env, more

    def _module_tree(self, starts: List[str], limit: int = 500) -> List[str]:
        """``starts`` (module files' real paths), then the files of the project modules their
        globals are or come from, transitively (at most ``limit`` in all)."""
        import types as _types

        from zenbuild.trace.modules import modules_by_file

        under = tuple({os.path.abspath(self.root) + os.sep, os.path.realpath(self.root) + os.sep})
        # not the project's: a virtualenv or the store inside the root
        skip = tuple({os.path.realpath(p) + os.sep
                      for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, self.store) if p})
        by_file: Dict[str, Any] = {}  # real path -> module, of the project's modules only
        for f, m in modules_by_file().items():
            if f.startswith(under):  # (realpath only for these: a few syscalls each)
                full = os.path.realpath(f)
                if not full.startswith(skip) and "-packages" + os.sep not in full:
                    by_file.setdefault(full, m)
        by_name = {m.__name__: f for f, m in by_file.items()}
        out = list(dict.fromkeys(starts))
        seen, todo = set(out), list(out)
        while todo and len(out) < limit:
            mod = by_file.get(todo.pop())
            try:
                values = list(vars(mod).values()) if mod is not None else []
            except TypeError:  # pragma: no cover - a module without a __dict__
                continue
            for v in values:
                got: Optional[str] = None
                if isinstance(v, _types.ModuleType):
                    path = getattr(v, "__file__", None)
                    if isinstance(path, str) and os.path.abspath(path).startswith(under):
                        got = os.path.realpath(path)
                else:
                    owner = getattr(v, "__module__", None)
                    got = by_name.get(owner) if isinstance(owner, str) else None
                if got is not None and got in by_file and got not in seen:
                    seen.add(got)
                    out.append(got)
                    todo.append(got)
        return out

    def verify(self, record: Optional[Mapping[str, Any]], first_only: bool) -> List[Reason]:
        if not record:
            return []
        if record.get("untrusted"):  # from a remote cache, unsigned: checked without importing
            from zenbuild import imported  # any module it names

            with imported.imports_blocked():
                return self._verify(record, first_only)
        return self._verify(record, first_only)

    def _verify(self, record: Mapping[str, Any], first_only: bool) -> List[Reason]:
        return verify(record, self.file_digest, self.environ, self.code_digest,
                      self.list_digest, first_only, self.env_wanted, self.secret_digest,
                      self.glob_digest, self.type_digest, self.closure_digest,
                      self.module_digest,
                      *((self.subclasses.digest, self.subclasses.now)
                        if self.subclasses is not None else (None, None)))


# -- the default code digest: the function's source, docstrings and formatting aside ------------


class SourceDigests:
    """A CodeDigest over project sources: the AST of the def that ``qualname`` names (the
    nearest to ``firstlineno`` when a name is defined twice), docstrings stripped, so comments
    and formatting do not count. Code in a comprehension or lambda counts as its enclosing
    function's. ``"<__main__>"`` code (notebook cells) is found in ``__main__`` by name.
    Parsed files are kept per (path, mtime, size) for the life of the object."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._trees: Dict[str, Tuple[Tuple[int, int], Optional[ast.Module]]] = {}

    def __call__(self, file: str, qualname: str, firstlineno: int) -> Optional[str]:
        if file == "<__main__>":
            return self._main(qualname)
        tree = self._tree(os.path.join(self.root, file))
        if tree is None:
            return None
        node = _find(tree, qualname, firstlineno)
        return None if node is None else _node_digest(node)

    def module(self, file: str) -> Optional[str]:
        """The normalized source digest of a whole project module (docstrings out), top-level
        function bodies left out."""
        tree = self._tree(os.path.join(self.root, file))
        if tree is None:
            return None
        import ast
        import copy

        body = tree.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body = body[1:]
        # a top-level function counts by its signature and decorators: its body matters only
        # if it runs, and then the call trace checks it (with its closure)
        out: List[ast.stmt] = []
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = copy.copy(n)
                n.body = [ast.Pass()]
            out.append(n)
        return _node_digest(ast.Module(body=out, type_ignores=[]))

    def _tree(self, path: str) -> Optional[ast.Module]:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        hit = self._trees.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        import ast

        try:
            with open(path, "rb") as f:
                tree: Optional[ast.Module] = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            tree = None
        self._trees[path] = (key, tree)
        return tree

    def _main(self, qualname: str) -> Optional[str]:
        import ast
        import inspect
        import textwrap

        obj: Any = sys.modules.get("__main__")
        for part in qualname.split("."):
            if part.startswith("<"):
                break
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        try:
            src = textwrap.dedent(inspect.getsource(obj))
            tree = ast.parse(src)
        except (OSError, TypeError, SyntaxError):
            return None
        return _node_digest(tree.body[0]) if tree.body else None


def _defs(body: List[ast.stmt]) -> List[ast.AST]:
    """Defs and classes in a block, also inside if/try/with/for blocks (not inside defs)."""
    import ast

    out: List[ast.AST] = []
    for n in body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(n)
        else:
            for name in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(n, name, None)
                if isinstance(sub, list):
                    out += _defs([s for s in sub if isinstance(s, ast.stmt)] +
                                 [s for h in sub if isinstance(h, ast.ExceptHandler)
                                  for s in h.body])
    return out


def _first_line(n: ast.AST) -> int:
    decos = getattr(n, "decorator_list", [])
    return min([getattr(n, "lineno", 0)] + [d.lineno for d in decos])


def _find(tree: ast.Module, qualname: str, firstlineno: int) -> Optional[ast.AST]:
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    level: List[ast.AST] = [tree]
    for part in parts:
        if part.startswith("<"):  # a lambda, comprehension or genexpr: its enclosing def
            break
        found = [d for n in level for d in _defs(getattr(n, "body", []))
                 if getattr(d, "name", None) == part]
        if not found:
            return None
        level = found
    if level == [tree]:
        return None
    return min(level, key=lambda n: abs(_first_line(n) - firstlineno))


def _node_digest(node: ast.AST) -> str:
    import ast
    import copy

    node = copy.deepcopy(node)
    for n in ast.walk(node):
        body = getattr(n, "body", None)
        if (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            n.body = body[1:] or [ast.Pass()]
    return digest_bytes(ast.dump(node, include_attributes=False).encode())
