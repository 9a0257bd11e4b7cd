"""The one place that judges staleness: a step's fingerprint components, and decide(), which
stops at the first reason to execute (for run) or collects every reason (for explain/status)."""

from __future__ import annotations

import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from zenbuild.digest import StatCache, StatKey, digest_bytes
from zenbuild.errors import ParamError
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.params import display_param, encode_param
from zenbuild.graph import FileRef, Node
from zenbuild.paths import MissingInput, dir_files
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


@record
class CachePolicy:
    """How caching applies to one step, from the precedence rules."""

    no_cache: bool
    enabled: bool
    source: str  # what decided `enabled`: "default", "run", "config", "step", "pipeline"


def cache_policy(
    node: Node,
    run_level: Optional[bool],
    config_setting: Optional[bool],
    pipeline_setting: Optional[bool],
) -> CachePolicy:
    """Precedence: run-level > zenbuild.toml [steps.NAME] > @step > @pipeline > on."""
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
    return CachePolicy(no_cache=node.step.no_cache, enabled=enabled, source=source)


_DISABLED_BY = {
    "run": "caching disabled by --no-cache",
    "config": "caching disabled by zenbuild.toml [steps.{name}] enable_cache = false",
    "step": "caching disabled by @step(enable_cache=False)",
    "pipeline": "caching disabled by @pipeline(enable_cache=False)",
}


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
    head: str = ""  # not persisted: the code and packages part of the fingerprint text

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
        }


def file_digests(
    root: str, refs: List[FileRef], statcache: StatCache
) -> Tuple[Dict[str, List[Any]], Dict[str, StatKey]]:
    files: Dict[str, List[Any]] = {}
    stats: Dict[str, StatKey] = {}
    lookup = statcache.lookup
    records = statcache.records
    prefix = root.rstrip("/") + "/"
    for ref in refs:
        for rel in dir_files(root, ref.path, ref.glob) if ref.is_dir else (ref.path,):
            full = prefix + rel
            try:
                if rel not in records:  # a cold run: open, fstat, read, fstat
                    got = statcache.digest_unrecorded(rel, full)
                    if got is not None and stat.S_ISREG(got[3]):
                        files[rel] = [got[0], got[1]]
                        stats[rel] = got[2]
                        continue
                st = os.stat(full)
            except FileNotFoundError:
                raise MissingInput(f"input file {rel!r} does not exist") from None
            key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            digest = lookup(rel, key)  # the no-op path: a trusted stat-cache entry
            if digest is None:
                if not ref.is_dir and stat.S_ISDIR(st.st_mode):
                    raise MissingInput(f"input {rel!r} is a folder; declare it with Dir({rel!r})")
                digest, size = statcache.digest(rel, full, st)
                files[rel] = [digest, size]
            else:
                files[rel] = [digest, key[0]]
            stats[rel] = key
    return files, stats


def compute_components(
    node: Node,
    root: str,
    fingerprinter: CodeFingerprinter,
    statcache: StatCache,
    upstream_digests: Dict[str, str],
) -> Components:
    code = fingerprinter.code(node.step.fn)
    params: Dict[str, List[str]] = {}
    inputs: Dict[str, Dict[str, str]] = {}
    for arg, value in node.args.items():
        try:
            params[arg] = [digest_bytes(encode_param(value))]
        except Unencodable as e:
            raise ParamError(
                f"step {node.name}, argument {arg}: a value of type {e} has no deterministic "
                "encoding, so it cannot be part of a fingerprint. Pass plain data (numbers, "
                "strings, lists, dicts, paths), or build the object inside the step."
            ) from None
    for arg, ups in node.arg_inputs.items():
        inputs[arg] = {u: upstream_digests[u] for u in ups}
    files, stats = file_digests(root, node.files, statcache) if node.files else ({}, {})
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
    )


@record
class Verdict:
    execute: bool
    reasons: List[str]
    entry: Optional[ActionEntry] = None


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def diff_components(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Every difference between two recorded component sets, in words."""
    reasons: List[str] = []
    oc, nc = old.get("code", {}), new.get("code", {})
    meta = {**old.get("code_meta", {}), **new.get("code_meta", {})}

    def label(k: str) -> str:
        kind, f = (meta.get(k) or ["code", ""])[:2]
        kind = {"step": "step function", "function": "helper"}.get(kind, kind)
        return f"{kind} {k}" + (f" ({f})" if f else "")

    for k in sorted(set(oc) | set(nc)):
        if k not in oc:
            reasons.append(f"code: now uses {label(k)}")
        elif k not in nc:
            reasons.append(f"code: no longer uses {label(k)}")
        elif oc[k] != nc[k]:
            reasons.append(f"code: {label(k)} changed")
    op, np_ = old.get("packages", {}), new.get("packages", {})
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            reasons.append(f"package {k}: {op.get(k, 'not used')} -> {np_.get(k, 'not used')}")
    opar, npar = old.get("params", {}), new.get("params", {})
    for k in sorted(set(opar) | set(npar)):
        o, n = opar.get(k), npar.get(k)
        if o is None:
            reasons.append(f"param {k}: new ({n[1]})")
        elif n is None:
            reasons.append(f"param {k}: removed")
        elif o[0] != n[0]:
            reasons.append(f"param {k}: {o[1]} -> {n[1]}")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for arg in sorted(set(oi) | set(ni)):
        o, n = oi.get(arg, {}), ni.get(arg, {})
        for up in sorted(set(o) | set(n)):
            if up not in o:
                reasons.append(f"input {arg}: now reads the output of step {up}")
            elif up not in n:
                reasons.append(f"input {arg}: no longer reads the output of step {up}")
            elif o[up] != n[up]:
                reasons.append(f"input {arg}: upstream step {up} produced different output")
    of, nf = old.get("files", {}), new.get("files", {})
    for p in sorted(set(of) | set(nf)):
        if p not in of:
            reasons.append(f"file {p}: new input")
        elif p not in nf:
            reasons.append(f"file {p}: no longer an input")
        elif of[p][0] != nf[p][0]:
            reasons.append(f"file {p}: content changed ({_size(of[p][1])} -> {_size(nf[p][1])})")
    oe, ne = old.get("env", {}), new.get("env", {})
    for k in sorted(set(oe) | set(ne)):
        if oe.get(k) != ne.get(k):
            reasons.append(f"env {k}: {oe.get(k)} -> {ne.get(k)}")
    return reasons


def decide(
    node: Node,
    comps: Components,
    fingerprint: str,
    policy: CachePolicy,
    previous: Optional[ActionEntry],
    lookup: Callable[[str], Optional[ActionEntry]],
    usable: Callable[[ActionEntry], Optional[str]],
    all_reasons: bool = False,
) -> Verdict:
    """Whether ``node`` must execute, and why. ``previous`` is the step's latest entry;
    ``lookup`` finds an entry by fingerprint; ``usable`` says why an entry cannot be served."""
    reasons: List[str] = []
    forced = False
    if policy.no_cache:
        reasons.append("no_cache: external input, always executes")
        forced = True
    elif not policy.enabled:
        reasons.append(_DISABLED_BY[policy.source].format(name=node.name))
        forced = True
    if forced and not all_reasons:
        return Verdict(True, reasons)
    entry = previous if previous is not None and previous.fingerprint == fingerprint else None
    if entry is None:
        entry = lookup(fingerprint)
    if entry is None:
        if previous is None:
            reasons.append("never built")
        else:
            changed = diff_components(previous.components, comps.to_json())
            reasons.extend(changed or ["no cache entry for this fingerprint"])
        return Verdict(True, reasons)
    problem = usable(entry)
    if problem:
        reasons.append(problem)
        return Verdict(True, reasons, None)
    if forced:
        return Verdict(True, reasons, entry)
    return Verdict(False, ["up to date"], entry)
