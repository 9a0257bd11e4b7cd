"""What differs between two recorded component sets of a step's key, as reason records (the
"why" of a step whose fingerprint has no entry): code, packages, params, inputs, files,
zenbuild's environment, Env() inputs (secrets hidden) and a version probe's value."""

from __future__ import annotations

from typing import Any, Dict, List

from zenbuild import reasons as R
from zenbuild.reasons import Reason


def diff_components(old: Dict[str, Any], new: Dict[str, Any]) -> List[Reason]:
    """Every difference between two recorded component sets, as records."""
    reasons: List[Reason] = []
    oc, nc = old.get("code", {}), new.get("code", {})
    meta = {**old.get("code_meta", {}), **new.get("code_meta", {})}

    def item(k: str) -> Dict[str, Any]:
        kind, f = (meta.get(k) or ["code", ""])[:2]
        return {"item": kind, "file": f}

    for k in sorted(set(oc) | set(nc)):
        if k not in oc:
            reasons.append(Reason(R.CODE_ADDED, k, None, nc[k], item(k)))
        elif k not in nc:
            reasons.append(Reason(R.CODE_REMOVED, k, oc[k], None, item(k)))
        elif oc[k] != nc[k]:
            reasons.append(Reason(R.CODE_CHANGED, k, oc[k], nc[k], item(k)))
    op, np_ = old.get("packages", {}), new.get("packages", {})
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            reasons.append(Reason(R.PACKAGE_VERSION, k, op.get(k), np_.get(k)))
    opar, npar = old.get("params", {}), new.get("params", {})
    for k in sorted(set(opar) | set(npar)):
        o, n = opar.get(k), npar.get(k)
        if o is None:
            reasons.append(Reason(R.PARAM_NEW, k, None, n[1]))
        elif n is None:
            reasons.append(Reason(R.PARAM_REMOVED, k, o[1], None))
        elif o[0] != n[0]:
            reasons.append(Reason(R.PARAM_CHANGED, k, o[1], n[1]))
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for arg in sorted(set(oi) | set(ni)):
        o, n = oi.get(arg, {}), ni.get(arg, {})
        for up in sorted(set(o) | set(n)):
            if up not in o:
                reasons.append(Reason(R.INPUT_ADDED, arg, None, n[up], {"step": up}))
            elif up not in n:
                reasons.append(Reason(R.INPUT_REMOVED, arg, o[up], None, {"step": up}))
            elif o[up] != n[up]:
                reasons.append(Reason(R.INPUT_CHANGED, arg, o[up], n[up], {"step": up}))
    of, nf = old.get("files", {}), new.get("files", {})
    for p in sorted(set(of) | set(nf)):
        if p not in of:
            reasons.append(Reason(R.FILE_NEW, p, None, nf[p][1]))
        elif p not in nf:
            reasons.append(Reason(R.FILE_REMOVED, p, of[p][1], None))
        elif of[p][0] != nf[p][0]:
            reasons.append(Reason(R.FILE_CHANGED, p, of[p][1], nf[p][1]))
    osh, nsh = old.get("shape", {}), new.get("shape", {})
    for k in sorted(set(osh) | set(nsh)):
        if (osh.get(k) or [None])[0] != (nsh.get(k) or [None])[0]:
            reasons.append(Reason(R.DIR_SHAPE_CHANGED, k.rsplit(":", 1)[0]))
    oe, ne = old.get("env", {}), new.get("env", {})
    for k in sorted(set(oe) | set(ne)):
        if oe.get(k) != ne.get(k):
            reasons.append(Reason(R.ENV_CHANGED, k, oe.get(k), ne.get(k)))
    ov, nv = old.get("envs", {}), new.get("envs", {})
    for k in sorted(set(ov) | set(nv)):
        o, n = ov.get(k), nv.get(k)
        if (o or [None])[0] != (n or [None])[0]:
            secret = (o is not None and o[1] is None) or (n is not None and n[1] is None)
            reasons.append(Reason(R.ENV_INPUT_CHANGED, k, None if secret or o is None else o[1],
                                  None if secret or n is None else n[1],
                                  {"secret": True} if secret else None))
    if ("version" in old or "version" in new) and old.get("version") != new.get("version"):
        reasons.append(Reason(R.VERSION_CHANGED, "version", old.get("version"),
                              new.get("version")))
    return reasons
