"""The one place that judges staleness: a step's fingerprint components (seen through a dry
run's output overlay), and decide(), which returns reason records (reasons.py): the first reason
to execute (for run) or every reason (for explain/status), including for a step whose upstream
would execute."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from zenbuild import reasons as R
from zenbuild.diffs import diff_components
from zenbuild.digest import StatCache, StatKey, digest_bytes
from zenbuild.discovered import digest_at
from zenbuild.errors import ParamError
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.params import display_param, encode_param
from zenbuild.graph import FileRef, Node
from zenbuild.overlay import OutputOverlay
from zenbuild.paths import MissingInput, dir_files
from zenbuild.reasons import Reason
from zenbuild.records import field, record
from zenbuild.serialize import Unencodable
from zenbuild.store.db import STORE_FORMAT, ActionEntry

ENV = {"store_format": str(STORE_FORMAT), "python": f"{sys.version_info[0]}.{sys.version_info[1]}"}


def _fingerprint_head(code: Dict[str, str], packages: Dict[str, str]) -> str:
    parts: List[str] = ["zenbuild-fingerprint-v1"]
    parts += [f"c\0{k}\0{v}" for k, v in sorted(code.items())]
    parts += [f"k\0{k}\0{v}" for k, v in sorted(packages.items())]
    return "\n".join(parts)


def _env_text(env: Dict[str, str]) -> str:
    return "\n".join(f"e\0{k}\0{v}" for k, v in sorted(env.items()))


_ENV_TEXT = _env_text(ENV)


class _NoVersion:
    def __repr__(self) -> str:
        return "NO_VERSION"


NO_VERSION: Any = _NoVersion()
PROBE_FAILED_VERSION = {"probe_failed": True}  # the version an entry made after a failed probe


@record
class CachePolicy:
    """How caching applies to one step, from the precedence rules."""

    no_cache: bool
    enabled: bool
    source: str  # what decided `enabled`: "default", "run", "config", "step", "pipeline"
    rerun: bool = False  # run --rerun NAME: execute even if cached (early cutoff downstream)
    expires_after: Optional[float] = None  # seconds: an older cached result executes again
    now: float = 0.0  # the wall time entries are aged by (durations.now: injectable)
    probe_error: Optional[str] = None  # the step's version probe raised: "Type: message"
    config_section: str = ""  # source "config": the [steps.NAME] that decided `enabled`


def cache_policy(
    node: Node,
    run_level: Optional[bool],
    config_setting: Optional[bool],
    pipeline_setting: Optional[bool],
    rerun: bool = False,
    expires_after: Optional[float] = None,
    now: float = 0.0,
    config_section: str = "",
) -> CachePolicy:
    """Precedence: run-level > zenbuild.toml [steps.NAME] > @step > @pipeline > on. @no_cache
    always executes; --rerun and expiry make a cached step execute (``expires_after``: the
    [steps.NAME] setting, else @step's); neither can turn caching on."""
    if run_level is not None:
        enabled, source = run_level, "run"
    elif config_setting is not None:
        enabled, source = config_setting, "config"
    elif node.step.enable_cache is not None:
        enabled, source = node.step.enable_cache, "step"
    elif pipeline_setting is not None:
        enabled, source = pipeline_setting, "pipeline"
    else:
        enabled, source = True, "default"
    if expires_after is None:
        expires_after = node.step.expires_after
    return CachePolicy(no_cache=node.step.no_cache, enabled=enabled, source=source, rerun=rerun,
                       expires_after=expires_after, now=now,
                       config_section=config_section if source == "config" else "")


@record
class Components:
    """Everything a fingerprint is made of, kept apart so a change can be named."""

    code: Dict[str, str]
    code_meta: Dict[str, List[str]]
    packages: Dict[str, str]
    params: Dict[str, List[str]]  # arg -> [digest] (+ display when persisted)
    inputs: Dict[str, Dict[str, str]]  # arg -> {upstream step: output digest}
    files: Dict[str, List[Any]]  # path -> [digest, size]
    env: Dict[str, str]
    stats: Dict[str, StatKey] = field(default_factory=dict)  # not persisted
    args: Dict[str, Any] = field(default_factory=dict)  # not persisted: for param display
    # not part of the fingerprint: the digest of each element of the value that a consumer
    # reads through an indexed handle (repr of the item path -> digest), kept on the entry
    elements: Dict[str, str] = field(default_factory=dict)
    head: str = ""  # not persisted: the code and packages part of the fingerprint text
    # Env("NAME") inputs: name -> [digest of the value (keyed for a secret), display or None]
    envs: Dict[str, List[Any]] = field(default_factory=dict)
    # Dir inputs holding more than plain 0644 files: shape_key -> [digest, count] of their
    # modes, symlink targets and empty folders (file_digests)
    shape: Dict[str, List[Any]] = field(default_factory=dict)
    # @step(version=probe): what the probe returned (JSON-able), PROBE_FAILED_VERSION when it
    # raised; NO_VERSION for a step without a probe (then nothing joins the fingerprint)
    version: Any = None
    has_version: bool = False

    def fingerprint(self) -> str:
        """One digest over every component. Keys and values are identifiers, paths and hex
        digests, none of which holds a NUL, so NUL-separated fields are unambiguous."""
        head = self.head or _fingerprint_head(self.code, self.packages)
        parts: List[str] = [head]
        parts += [f"p\0{k}\0{v[0]}" for k, v in sorted(self.params.items())]
        for arg, ups in sorted(self.inputs.items()):
            parts += [f"i\0{arg}\0{u}\0{d}" for u, d in sorted(ups.items())]
        parts += [f"f\0{k}\0{v[0]}" for k, v in sorted(self.files.items())]
        parts.append(_ENV_TEXT if self.env == ENV else _env_text(self.env))
        if self.envs:  # only then, so that a fingerprint made before Env() is the same
            parts += [f"n\0{k}\0{v[0]}" for k, v in sorted(self.envs.items())]
        if self.shape:  # only then: a key of plain files is what it was before
            parts += [f"s\0{k}\0{v[0]}" for k, v in sorted(self.shape.items())]
        if self.has_version:
            parts.append("v\0" + json.dumps(self.version, sort_keys=True, default=repr))
        return digest_bytes("\n".join(parts).encode("utf-8", "surrogatepass"))

    def to_json(self) -> Dict[str, Any]:
        return {
            "code": self.code,
            "code_meta": self.code_meta,
            "packages": self.packages,
            "params": {
                k: [v[0], display_param(self.args[k]) if k in self.args else (v[1:] or ["?"])[0]]
                for k, v in self.params.items()
            },
            "inputs": self.inputs,
            "files": self.files,
            "env": self.env,
            **({"elements": self.elements} if self.elements else {}),
            **({"envs": self.envs} if self.envs else {}),
            **({"shape": self.shape} if self.shape else {}),
            **({"version": self.version} if self.has_version else {}),
        }


def shape_key(ref: FileRef) -> str:
    """How a Dir input is named in the ``shape`` component: its path and glob."""
    return f"{ref.path}:{ref.glob or '**/*'}"


def file_digests(
    root: str, refs: List[FileRef], statcache: StatCache, overlay: Optional[OutputOverlay] = None,
    shapes: Optional[Dict[str, List[Any]]] = None,
) -> Tuple[Dict[str, List[Any]], Dict[str, StatKey]]:
    """[digest, size] of every file the declared inputs cover, and the stats that vouch for
    them (none for a file the dry-run ``overlay`` answers for). Raises MissingInput. With
    ``shapes``, each Dir input that holds more than plain files of mode 0644 gets an entry
    there (shape_key -> [digest, count]) of what else it holds: its files' other modes, its
    symlinks' targets, its empty and non-0755 folders (paths.dir_files), so that a change to
    any of them changes the key; a folder of plain files gets none (keys made before stay)."""
    files: Dict[str, List[Any]] = {}
    stats: Dict[str, StatKey] = {}
    lookup = statcache.lookup
    records = statcache.records
    prefix = root.rstrip("/") + "/"
    # a dry run that pretends to have restored outputs (no Python call for the usual case)
    over = overlay if overlay is not None and overlay.active() else None
    for ref in refs:
        shape: Optional[List[str]] = None
        if ref.is_dir:
            shape = [] if shapes is not None else None
            rels: Any = (over.listing(root, ref) if over is not None
                         else dir_files(root, ref.path, ref.glob, shape))
            if shape is not None and over is not None:  # the listing's own walk: once more
                try:
                    dir_files(root, ref.path, ref.glob, shape)
                except MissingInput:
                    pass
                shape[:] = over.shape_of(root, ref, shape)
            cut = 0 if ref.path == "." else len(ref.path) + 1
        else:
            rels = (ref.path,)
        for rel in rels:
            if over is not None:  # a dry run: what its restores would leave
                hit, path = over.where(root, rel)
                if hit is None and path != rel:  # through a pretended link, or removed
                    hit = digest_at(statcache, root, path)
                    if hit is None:
                        raise MissingInput(f"input file {rel!r} does not exist")
                if hit is not None:
                    files[rel] = [hit[0], hit[1]]
                    continue
            full = prefix + rel
            try:
                if rel not in records:  # a cold run: open, fstat, read, fstat
                    got = statcache.digest_unrecorded(rel, full)
                    if got is not None and stat.S_ISREG(got[3]):
                        files[rel] = [got[0], got[1]]
                        stats[rel] = got[2]
                        if shape is not None and stat.S_IMODE(got[3]) != 0o644:
                            shape.append(f"{rel[cut:]}\0mode {stat.S_IMODE(got[3]):o}")
                        continue
                st = os.stat(full)
            except FileNotFoundError:
                raise MissingInput(f"input file {rel!r} does not exist") from None
            key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            rec = records.get(rel)  # the no-op path: a stored row whose stat matches (rows
            digest = (rec[4] if type(rec) is tuple and rec[:4] == key  # are saved trusted)
                      else lookup(rel, key))  # else StatCache's own rules
            if digest is None:
                if not ref.is_dir and stat.S_ISDIR(st.st_mode):
                    raise MissingInput(f"input {rel!r} is a folder; declare it with Dir({rel!r})")
                digest, size = statcache.digest(rel, full, st)
                files[rel] = [digest, size]
            else:
                files[rel] = [digest, key[0]]
            stats[rel] = key
            if shape is not None and stat.S_IMODE(st.st_mode) != 0o644:
                shape.append(f"{rel[cut:]}\0mode {stat.S_IMODE(st.st_mode):o}")
        if shape:  # shapes is not None
            shapes[shape_key(ref)] = [  # type: ignore[index]
                digest_bytes("\n".join(sorted(shape)).encode("utf-8", "surrogatepass")),
                len(shape)]
    return files, stats


def element_key(path: Tuple[Any, ...]) -> str:
    """How an item path of an indexed handle is named in components: ``[0]``, ``['a'][1]``."""
    return "".join(f"[{p!r}]" for p in path)


def _element_inputs(node: Node, inputs: Dict[str, Dict[str, str]],
                    elements: Dict[str, Dict[str, str]]) -> None:
    """Key a step reading ``split()[0]`` by that element's digest, so it stays cached when
    only another element changed (issue 10, class 16). Without a recorded element digest (an
    entry made before, a dry run's pending upstream) the whole value's digest stays."""
    for arg, pairs in node.input_paths.items():
        got = inputs[arg]
        whole = {u: node.arg_inputs[arg].count(u) for u in got}  # uses, indexed ones included
        for u, path in pairs:
            d = elements.get(u, {}).get(element_key(path))
            if d is not None:
                got[u + element_key(path)] = d
                whole[u] -= 1
        for u, n in whole.items():
            if n == 0:  # every use of u in this argument is an element with its own digest
                del got[u]


def compute_components(
    node: Node,
    root: str,
    fingerprinter: CodeFingerprinter,
    statcache: StatCache,
    upstream_digests: Dict[str, str],
    overlay: Optional[OutputOverlay] = None,
    elements: Optional[Dict[str, Dict[str, str]]] = None,
    envs: Optional[Dict[str, List[Any]]] = None,
    version: Any = NO_VERSION,
) -> Components:
    """The components of ``node``'s key. ``envs`` are its Env inputs, digested by the caller
    (policy.env_inputs); ``version`` what its version probe returned (NO_VERSION: none)."""
    code = fingerprinter.code(node.step.fn, entry=True)
    params: Dict[str, List[str]] = {}
    inputs: Dict[str, Dict[str, str]] = {}
    ignore = node.step.ignore
    varkw = node.step.params.varkw if ignore else None
    for arg, value in node.args.items():
        if ignore:
            if arg in ignore:
                continue
            if arg == varkw and type(value) is dict:
                value = {k: v for k, v in value.items() if k not in ignore}
        try:
            params[arg] = [digest_bytes(encode_param(value, root, fingerprinter.value_code))]
        except Unencodable as e:
            raise ParamError(f"step {node.name}, argument {arg}{e.path}: {e.explain()}") from None
    for arg, ups in node.arg_inputs.items():
        inputs[arg] = {u: upstream_digests[u] for u in ups}
    if node.input_paths:
        _element_inputs(node, inputs, elements or {})
    shapes: Dict[str, List[Any]] = {}
    files, stats = (file_digests(root, node.files, statcache, overlay, shapes) if node.files
                    else ({}, {}))
    track = fingerprinter.track_packages
    head = code.heads.get(track)
    if head is None:  # the code part of the fingerprint text: the same for every invocation
        head = code.heads[track] = _fingerprint_head(code.items, code.packages if track else {})
    return Components(
        code=code.items,
        code_meta=code.meta,
        packages=code.packages if track else {},
        params=params,
        inputs=inputs,
        files=files,
        env=dict(ENV),
        stats=stats,
        args=node.args,
        head=head,
        envs=envs or {},
        shape=shapes,
        version=None if version is NO_VERSION else version,
        has_version=version is not NO_VERSION,
    )


@record
class Verdict:
    """Whether a step executes, every reason (records, see reasons.py), and the stored entry
    whose fingerprint matches, if one is known (served only when ``execute`` is False; for a
    step that executes anyway, its value tells whether the step is deterministic)."""

    execute: bool
    reasons: List[Reason]
    entry: Optional[ActionEntry] = None


_UP_TO_DATE = [Reason(R.UP_TO_DATE)]
# (discovered record, stop at the first reason) -> why the entry may not be served
Verify = Callable[[Dict[str, Any], bool], List[Reason]]


def pending_reasons(pending: Sequence[str], comps: Optional[Components]) -> List[Reason]:
    """One reason per upstream step that would execute, naming the argument that reads it
    when the step's inputs are known."""
    args: Dict[str, List[str]] = {}
    for arg, ups in (comps.inputs if comps is not None else {}).items():
        for up in ups:
            args.setdefault(up, []).append(arg)
    out: List[Reason] = []
    for d in pending:
        if d in args:
            out += [Reason(R.UPSTREAM_PENDING, d, detail={"arg": a}) for a in args[d]]
        else:
            out.append(Reason(R.UPSTREAM_PENDING, d))
    return out


def decide(
    node: Node,
    comps: Optional[Components],
    fingerprint: str,
    policy: CachePolicy,
    previous: Optional[ActionEntry],
    lookup: Callable[[str], Optional[ActionEntry]],
    usable: Callable[[ActionEntry], Optional[Reason]],
    all_reasons: bool = False,
    pending: Sequence[str] = (),
    verify: Optional[Verify] = None,
    alternates: Optional[Callable[[str], List[ActionEntry]]] = None,
) -> Verdict:
    """Whether ``node`` must execute, and why. ``previous`` is the step's latest entry;
    ``lookup`` finds an entry by fingerprint; ``usable`` says why an entry cannot be served.

    ``pending`` names upstream steps that would execute (a dry run): then the step executes
    too; with ``all_reasons`` it is first judged on everything else it can be compared on
    (``comps`` made with the upstream outputs it saw last time, or None when they cannot be
    made: a file an upstream step writes may not exist yet), then one upstream_pending reason
    per pending step is added. Without ``all_reasons`` decide() stops at the first reason.

    ``verify`` checks an entry's discovered record (what its step touched while it ran:
    discovered.Discovery.verify): an entry whose static key matches is served only when it
    returns no reason; else ``alternates`` gives the other entries of that key (made when what
    the step read was different, e.g. before a file was edited and reverted), one of which
    may verify."""
    if pending and (not all_reasons or comps is None):
        return Verdict(True, pending_reasons(pending[:1] if not all_reasons else pending, comps))
    assert comps is not None
    verdict = _decide(node, comps, fingerprint, policy, previous, lookup, usable, all_reasons,
                      verify, alternates)
    if not pending:
        return verdict
    own = [r for r in verdict.reasons if r.kind != R.UP_TO_DATE]
    return Verdict(True, own + pending_reasons(pending, comps))


def _decide(
    node: Node,
    comps: Components,
    fingerprint: str,
    policy: CachePolicy,
    previous: Optional[ActionEntry],
    lookup: Callable[[str], Optional[ActionEntry]],
    usable: Callable[[ActionEntry], Optional[Reason]],
    all_reasons: bool,
    verify: Optional[Verify] = None,
    alternates: Optional[Callable[[str], List[ActionEntry]]] = None,
) -> Verdict:
    reasons: List[Reason] = []
    forced = False
    if policy.no_cache:
        reasons.append(Reason(R.NO_CACHE))
        forced = True
    elif not policy.enabled:
        reasons.append(Reason(R.CACHE_DISABLED, policy.source,
                              detail={"step": policy.config_section or node.name}
                              if policy.source == "config" else None))
        forced = True
    elif policy.rerun:
        reasons.append(Reason(R.FORCED_RERUN, node.name))
        forced = True
    if policy.probe_error is not None and not policy.no_cache:
        reasons.append(Reason(R.PROBE_FAILED, node.name, after=policy.probe_error))
        forced = True
    latest = previous if previous is not None and previous.fingerprint == fingerprint else None
    if forced and not all_reasons:  # the step's own latest entry, if it matches: no lookup
        record = latest.discovered if latest is not None else None
        if record is not None and verify is not None and verify(record, True):
            latest = None  # it read something else: a different value is no sign of chance
        return Verdict(True, reasons, latest)
    entry = latest
    if entry is None:
        entry = lookup(fingerprint)
    if entry is None:
        if previous is None:
            reasons.append(Reason(R.NEVER_BUILT))
        else:
            changed = diff_components(previous.components, comps.to_json())
            reasons.extend(changed or [Reason(R.NO_ENTRY)])
        return Verdict(True, reasons)
    record = entry.discovered
    if record is not None and verify is not None:
        found = verify(record, not all_reasons)
        if found:
            for alt in alternates(fingerprint) if alternates is not None else ():
                rec = alt.discovered
                if rec is not None and not verify(rec, True) and usable(alt) is None:
                    if forced:
                        return Verdict(True, reasons, alt)
                    old = _expired(alt, policy)  # an alternate ages like the latest entry
                    if old is not None:
                        return Verdict(True, [*reasons, old], alt)
                    return Verdict(False, _UP_TO_DATE, alt)
            # what it read is not the same: no entry for these inputs (None, so a different
            reasons.extend(found)  # value is not taken for non-determinism)
            return Verdict(True, reasons)
    problem = usable(entry)
    if problem is not None:
        reasons.append(problem)
        return Verdict(True, reasons, entry)
    if forced:
        return Verdict(True, reasons, entry)
    expired = _expired(entry, policy)
    if expired is not None:
        return Verdict(True, [*reasons, expired], entry)
    return Verdict(False, _UP_TO_DATE, entry)


def _expired(entry: ActionEntry, policy: CachePolicy) -> Optional[Reason]:
    """EXPIRED when ``entry`` is older than the step's cache_expires_after."""
    limit = policy.expires_after
    if limit is None or not entry.created:
        return None
    age = policy.now - entry.created
    if age <= limit:
        return None
    return Reason(R.EXPIRED, entry.step, round(age, 3), limit)
