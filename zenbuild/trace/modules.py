"""Project modules a step used while it ran, for the recorder: those imported during the step
(new in ``sys.modules``: ``import_module(f"configs.{exp}")``) and those already imported whose
module object the step touched (``sys.modules["h"].K``, ``getattr(ops, name)``, a second step
finding the first step's import cached). Python has no event for either use of a cached module
(the ``import`` audit event fires only when a module is loaded), so while a step runs each
plain project module's class is swapped for _Armed, whose ``__getattribute__`` notes the module
for the recordings under way and swaps the plain class back at once (one callback per module
per step; code inside the module reads its globals from its dict, never through it). While
several recordings run at once in threads, modules stay armed until the last one ends (none
may miss a use). A module with a class of its own (a lazy-attribute module) is not armed.
The result is an over-approximation the record keeps as file digests (discovered.build leaves
out modules the static key already names)."""

from __future__ import annotations

import operator
import sys
import threading
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild.trace import calls as _calls

if TYPE_CHECKING:  # pragma: no cover
    from zenbuild.trace import _Recording

_PLAIN = types.ModuleType
_ZB_DIR = _calls._ZB_DIR
_LOCK = threading.Lock()
_ARMED: Dict[int, types.ModuleType] = {}  # id -> module armed now
_USERS = [0]  # recordings with modules armed
# id(module) -> (module, project file key or None); modules are pinned so ids stay unique
_KEYS: Dict[int, Tuple[types.ModuleType, Optional[str]]] = {}
_TARGET: List[Optional[Callable[[], Optional[_Recording]]]] = [None]
# (root, excluded) -> (sys.modules' values at the last scan, its project modules)
_SCANS: Dict[Tuple[str, Tuple[str, ...]], Tuple[List[Any], List[Tuple[types.ModuleType, str]]]] = {}
_is = operator.is_


def modules_by_file() -> Dict[str, types.ModuleType]:
    """Every loaded module that has a file, by the file's absolute path (the first one when
    two names load one file)."""
    import os

    out: Dict[str, types.ModuleType] = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if isinstance(f, str) and isinstance(m, types.ModuleType):
            out.setdefault(os.path.abspath(f), m)
    return out


class _Armed(types.ModuleType):
    def __getattribute__(self, name: str) -> Any:
        try:
            _touched(self)
        except Exception:  # noting a use must never fail the user's attribute read
            pass
        return _PLAIN.__getattribute__(self, name)


def _touched(mod: types.ModuleType) -> None:
    if sys._getframe(2).f_code.co_filename.startswith(_ZB_DIR):
        return  # zenbuild's own look (pickling a result, the fingerprinter): not the step's
    target = _TARGET[0]
    rec = target() if target is not None else None
    entry = _KEYS.get(id(mod))
    key = entry[1] if entry is not None and entry[0] is mod else None
    r = rec
    while r is not None and key is not None:
        r.modules.add(key)
        r = r.parent
    if rec is not None and _USERS[0] <= 1:
        with _LOCK:
            if _USERS[0] <= 1 and _ARMED.pop(id(mod), None) is not None:
                _PLAIN.__setattr__(mod, "__class__", _PLAIN)


def note_loaded(filename: str) -> None:
    """A project module's code was just loaded from ``filename`` (project.SourceLoader): the
    recordings under way used it, also when no module of it stays in ``sys.modules``
    (``runpy.run_module("jobs.job")`` runs it in a module of its own, gone afterwards)."""
    from zenbuild.trace import _target

    rec = _target()
    if rec is None:
        return
    key = _calls._key_of(_calls._keys(rec.root, rec.excluded), filename, rec.root, rec.excluded)
    r: Optional[_Recording] = rec
    while r is not None and key is not None and key != "<__main__>":
        r.modules.add(key)
        r = r.parent


def _project_modules(rec: _Recording) -> List[Tuple[types.ModuleType, str]]:
    """The project modules in ``sys.modules`` now, with their file keys. Scanned again only
    when ``sys.modules`` holds other objects than at the last scan for this root (a check at C
    speed): each step's recording asks twice, and a scan of the few hundred modules a data
    project imports cost a cold step more than its own five reads."""
    mods = list(sys.modules.values())
    memo_key = (rec.root, rec.excluded)
    last = _SCANS.get(memo_key)
    if last is not None and len(last[0]) == len(mods) and all(map(_is, last[0], mods)):
        return last[1]
    keys = _calls._keys(rec.root, rec.excluded)
    out: List[Tuple[types.ModuleType, str]] = []
    for mod in mods:
        entry = _KEYS.get(id(mod))
        if entry is None or entry[0] is not mod:
            f = getattr(mod, "__file__", None) if isinstance(mod, types.ModuleType) else None
            key = _calls._key_of(keys, f, rec.root, rec.excluded) if isinstance(f, str) else None
            if key == "<__main__>":
                key = None
            entry = _KEYS[id(mod)] = (mod, key)
        if entry[1] is not None:
            out.append((mod, entry[1]))
    _SCANS[memo_key] = (mods, out)
    return out


def arm(rec: _Recording, target: Callable[[], Optional[_Recording]]) -> Set[int]:
    """Arm the project modules loaded now; returns their ids (to tell new ones at disarm)."""
    _TARGET[0] = target
    seen: Set[int] = set()
    with _LOCK:
        _USERS[0] += 1
        for mod, _key in _project_modules(rec):
            seen.add(id(mod))
            if type(mod) is _PLAIN:
                try:
                    _PLAIN.__setattr__(mod, "__class__", _Armed)
                except TypeError:
                    continue
                _ARMED[id(mod)] = mod
    return seen


def disarm(rec: _Recording, before: Set[int]) -> None:
    """End a recording: note the project modules imported while it ran, and put every armed
    module back to its plain class when no other recording is under way."""
    for mod, key in _project_modules(rec):
        if id(mod) not in before:
            rec.modules.add(key)
    with _LOCK:
        _USERS[0] -= 1
        if _USERS[0] <= 0:
            _USERS[0] = 0
            for mod in _ARMED.values():
                if type(mod) is _Armed:
                    _PLAIN.__setattr__(mod, "__class__", _PLAIN)
            _ARMED.clear()
