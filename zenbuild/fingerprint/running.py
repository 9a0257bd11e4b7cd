"""Whether the code that will run is the code that was fingerprinted: a function object in
memory against the source on disk now. The CLI imports project modules through zenbuild's
source loader, which guarantees it; a script or notebook (`pipeline().run()`) may hold a module
imported before an edit, or loaded from a stale .pyc, and then the fingerprint (read from the
file) describes code that is not the code that runs."""

from __future__ import annotations

import os
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from zenbuild.trace.calls import code_qualname

# path -> ((mtime_ns, size), {qualname: [code shapes]}) of the file as it is on disk
_COMPILED: Dict[str, Tuple[Tuple[int, int], Dict[str, List[Any]]]] = {}


def code_shape(code: types.CodeType) -> Any:
    """A code object without its positions: equal for the same source compiled anywhere, in
    any process (a set literal's constant is a frozenset, whose order follows the process's
    string hashes: it is taken sorted)."""
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
            code.co_argcount, code.co_kwonlyargcount, code.co_flags,
            tuple(_const_shape(c) for c in code.co_consts))


def _const_shape(c: Any) -> Any:
    if isinstance(c, types.CodeType):
        return code_shape(c)
    if type(c) is frozenset:
        return ("frozenset", tuple(sorted(repr(_const_shape(x)) for x in c)))
    if type(c) is tuple:
        return ("tuple", tuple(_const_shape(x) for x in c))
    return (type(c).__name__, repr(c))


def _on_disk(path: str) -> Optional[Dict[str, List[Any]]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    hit = _COMPILED.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        with open(path, "rb") as f:
            top = compile(f.read(), path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return None
    found: Dict[str, List[Any]] = {}
    todo = [top]
    while todo:
        c = todo.pop()
        found.setdefault(code_qualname(c), []).append(code_shape(c))
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    _COMPILED[path] = (key, found)
    return found


def stale_source(funcs: Iterable[Any], trusted: Callable[[str], bool]) -> Optional[str]:
    """The source file of the first function whose code in memory is not what its file on disk
    compiles to now, or None. Files ``trusted`` says were imported through zenbuild's source
    loader (checked there) and code with no file on disk (notebook cells) are skipped."""
    for fn in funcs:
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            continue
        path = code.co_filename
        if not path.endswith(".py") or trusted(path):
            continue
        compiled = _on_disk(path)
        if compiled is None:
            continue
        if code_shape(code) not in compiled.get(code_qualname(code), []):
            return path
    return None
