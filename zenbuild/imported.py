"""What this process imported of the project: each project module's source as it was when
imported (digest and stat, noted by project.SourceLoader), the files each module read while it
was being imported (its own top-level code, not its nested imports'), and the check that a
step's code did not change on disk between import and the step's end (issue 10, item 7).

It is a process-wide registry because imports are process-wide: the front door (project.py)
writes it, the code fingerprint (import reads belong to a module's fingerprint) and the
recorder (commit.py: a changed source marks a result uncached) read it. Keys are real paths."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from zenbuild.digest import StatKey, digest_file, stat_key
from zenbuild.paths import shown
from zenbuild.reasons import SOURCE_CHANGED_DURING, Reason

# real path of a project module file -> (digest of the source bytes compiled, stat before read)
_SOURCES: Dict[str, Tuple[str, Optional[StatKey]]] = {}
# real path of a project module file -> {project-relative posix path read while importing it}
_READS: Dict[str, Dict[str, None]] = {}
# real path of a file read at import -> its stat after the importing module ran (None: gone)
_READ_STATS: Dict[str, Optional[StatKey]] = {}
# real path of a project module file -> {variable: value when first read, None if unset} of the
# environment variables its own top-level code read while it was imported
_ENV: Dict[str, Dict[str, Optional[str]]] = {}
_REAL: Dict[str, str] = {}  # label or path -> real path (memo)


def _stat(path: str) -> Optional[StatKey]:
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


def note_source(path: str, digest: str, before: Optional[StatKey]) -> None:
    """A project module was compiled from source bytes with ``digest``; ``before``: the file's
    stat taken before the bytes were read (so an edit during the read shows as a stat change)."""
    _SOURCES[os.path.realpath(path)] = (digest, before)


def note_reads(module_path: str, root: str, reads: Iterable[str]) -> None:
    """The project files (root-relative posix) module ``module_path`` read while importing."""
    got = {r: None for r in reads if not r.endswith(".py")}
    if not got:
        return
    _READS.setdefault(os.path.realpath(module_path), {}).update(got)
    for rel in got:
        full = os.path.realpath(os.path.join(root, rel))
        _READ_STATS.setdefault(full, _stat(full))


def note_env(module_path: str, env: Dict[str, Optional[str]]) -> None:
    """The environment variables module ``module_path`` read while importing (tracked ones:
    the recorder's deny-list applied), with the values they had then."""
    if env:
        _ENV.setdefault(os.path.realpath(module_path), {}).update(env)


# Whether checking a record may import a project module it names (a value type's module, the
# module of a traced call): not for a record that came from a remote cache unsigned (its
# "untrusted" mark), since an import runs the module's top level, and a forged record could
# name any project file, one of a restored Output included (discovered.Discovery.verify).
_IMPORTS_BLOCKED: List[bool] = []


def imports_allowed() -> bool:
    """False while an untrusted record is checked (imports_blocked)."""
    return not _IMPORTS_BLOCKED


class imports_blocked:
    """A block in which imports_allowed() is False."""

    def __enter__(self) -> None:
        _IMPORTS_BLOCKED.append(True)

    def __exit__(self, *exc: Any) -> None:
        _IMPORTS_BLOCKED.pop()


def reads_of(module_path: str) -> List[str]:
    """The project files (root-relative posix) module ``module_path`` (a real path) read
    while it was imported."""
    return list(_READS.get(module_path, ()))


def import_env(module_path: str) -> Dict[str, Optional[str]]:
    """{variable: value} read by module ``module_path`` (a real path) while it was imported."""
    return _ENV.get(module_path, {})


def imported_sources() -> Dict[str, str]:
    """{real path: content digest} of every project module imported from source so far."""
    return {p: d for p, (d, _) in _SOURCES.items()}


def import_reads() -> Dict[str, List[str]]:
    """{real path of a module file: [project-relative paths its import read]}."""
    return {m: list(r) for m, r in _READS.items()}


def has_reads() -> bool:
    return bool(_READS)


def reads_version() -> int:
    """Changes whenever a read is noted (a memo over import_reads() can tell it is stale)."""
    return sum(len(r) for r in _READS.values())


class ReadItems:
    """For one code fingerprinter: the code items that files read at import add to a step.
    ``root``: the project's (the source loader records modules under it only); ``label_of``
    gives a module file's project label (as code items' meta carry it);
    ``digest_of`` a project-relative file's content digest (through the stat cache), or None
    when it is gone."""

    def __init__(self, root: str, label_of: Callable[[str], Optional[str]],
                 digest_of: Callable[[str], Optional[str]]) -> None:
        self.prefix = os.path.realpath(root) + os.sep  # modules of this project only
        self.label_of = label_of
        self.digest_of = digest_of
        self._version = -1
        self._by_label: Dict[str, List[str]] = {}
        self._digests: Dict[str, str] = {}

    def add(self, items: Dict[str, str], meta: Dict[str, List[str]]) -> None:
        """Add ``F (read when M is imported)`` with F's digest for every file F read while
        importing a module M that one of the step's items (``meta``: item -> [kind, label])
        lives in."""
        version = reads_version()
        if self._version != version:
            self._version = version
            self._by_label = {}
            for module_path, reads in _READS.items():
                if not module_path.startswith(self.prefix):
                    continue
                label = self.label_of(module_path)
                if label is not None:
                    self._by_label.setdefault(label, []).extend(reads)
        by_label = self._by_label
        for label in {m[1] for m in list(meta.values()) if len(m) > 1 and m[1]}:
            for rel in by_label.get(label, ()):
                key = f"{rel} (read when {label} is imported)"
                digest = self._digests.get(rel)
                if digest is None:
                    digest = self._digests[rel] = self.digest_of(rel) or "missing"
                items[key] = digest
                meta[key] = ["file", ""]


def _real(root: str, label: str) -> str:
    key = root + "\0" + label
    hit = _REAL.get(key)
    if hit is None:
        hit = _REAL[key] = os.path.realpath(label if os.path.isabs(label)
                                            else os.path.join(root, label))
    return hit


def changed_during_run(root: str, step: str, code_meta: Dict[str, List[str]]) -> Optional[Reason]:
    """Why a step's result must not be cached because code it was fingerprinted with changed
    on disk since it was imported: one of the project source files its code closure holds
    (``code_meta``: item -> [kind, file label]), or a file read when one of them was imported.
    Costs a stat per file; a digest only for a file whose stat moved."""
    if not _SOURCES:
        return None
    seen: Dict[str, None] = {}
    for meta in code_meta.values():
        label = meta[1] if len(meta) > 1 else ""
        if not label or label.startswith("<") or label in seen:
            continue
        seen[label] = None
        real = _real(root, label)
        got = _SOURCES.get(real)
        if got is None:
            continue
        digest, before = got
        now = _stat(real)
        if now is not None and now == before:
            pass
        else:
            try:
                if now is None or digest_file(real)[0] != digest:
                    return Reason(SOURCE_CHANGED_DURING, shown(label, root), detail={"step": step})
            except OSError:
                return Reason(SOURCE_CHANGED_DURING, shown(label, root), detail={"step": step})
        for rel in _READS.get(real, ()):
            full = _real(root, rel)
            if full in _READ_STATS and _stat(full) != _READ_STATS[full]:
                return Reason(SOURCE_CHANGED_DURING, rel, detail={"step": step})
    return None




def loaded_from_source(path: str) -> bool:
    """Whether ``path`` was imported through zenbuild's source loader in this process (its
    real path memoized, as _real() does: asked once per executed step, realpath costs ~8
    syscalls; a file imported later is still found, _SOURCES is looked up every time)."""
    real = _REAL.get(path)
    if real is None:
        real = _REAL[path] = os.path.realpath(path)
    return real in _SOURCES

