"""Plugin discovery through ``Base.__subclasses__()``, for the recorder: which classes a step
asked for their subclasses, and which project subclasses each had, by name.

``__subclasses__`` is no attribute of the class (the live class state does not hold it), touches
no module object and runs no project code, so no other trace sees it. Python has no cheap
event for one C call below 3.12 (cProfile's builtins would time every C call a step makes), so
the call is found after the step in the code that ran: a project code object the call trace
recorded whose names hold ``__subclasses__`` (``Base.__subclasses__()``,
``type.__subclasses__(Base)``, ``cls.__subclasses__()``; ``getattr(c, "__subclasses__")``: a
constant). Its receiver is read from the bytecode: a global name path (``Base``,
``models.base.Base``; the argument of ``type.__subclasses__``) is looked up in the code's
module; a method's first argument (``cls``, ``self``) is the method's class; anything else
(a local such as a recursive walker's parameter, ``type(x)``) is not known, and then every
project class hierarchy counts. Each class so found is a root, recorded with all its named
project subclasses at any depth (a walker recurses), as they are when the step ends: a
subclass made at run time that no module name reaches is left out (it would not be there
when the record is checked). A step whose code names no ``__subclasses__`` costs one test of
the name per project code object it ran, and nothing without call tracing.

The record is ``[[module, qualname, [[module, qualname, imported], ...]], ...]``
(Trace.subclasses; ``imported``: the subclass's module was imported while the step ran);
discovered.build adds each subclass's code digest, and discovered.verify compares both with
the subclasses the class has when the entry is checked (fingerprint/subclasses.py)."""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from zenbuild.trace import calls as _calls
from zenbuild.trace.modules import modules_by_file

NAME = "__subclasses__"
_LOADS = ("LOAD_ATTR", "LOAD_METHOD")
_GLOBAL = ("LOAD_GLOBAL", "LOAD_NAME")
Entry = List[Any]  # [module, qualname, [[module, qualname, imported by the step], ...]]


def asks(code: Any) -> bool:
    """Whether ``code`` may call ``__subclasses__`` (by attribute, or by a constant name)."""
    return NAME in code.co_names or NAME in code.co_consts


def named(obj: Any) -> bool:
    """Whether the class's module and qualified name lead back to it (as pickle finds it)."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
        return False
    cur: Any = sys.modules.get(mod)
    for part in qual.split("."):
        if cur is None:
            return False
        try:
            cur = vars(cur).get(part)
        except TypeError:
            return False
    return cur is obj


def descendants(cls: type, is_project: Callable[[type], bool]) -> List[List[str]]:
    """[module, qualname] of every named project subclass of ``cls`` at any depth, sorted."""
    out: Set[Tuple[str, str]] = set()
    todo: List[type] = list(type.__subclasses__(cls)) if isinstance(cls, type) else []
    seen: Set[int] = set()
    while todo:
        sub = todo.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        try:
            todo += type.__subclasses__(sub)
        except TypeError:  # pragma: no cover - not a class
            continue
        if not named(sub):  # type("B", (Mid,), {}) under an abc.ABC base: ABCMeta makes its
            # __module__ "abc"; the project module that binds it names it
            where = _bound_in_project(sub, is_project)
            if where is not None:
                out.add(where)
        elif is_project(sub):
            out.add((str(sub.__module__), str(sub.__qualname__)))
    return [list(t) for t in sorted(out)]


def _bound_in_project(cls: type, is_project: Callable[[Any], bool]
                      ) -> Optional[Tuple[str, str]]:
    """(module, name) of a project module's global that is ``cls``, or None."""
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, types.ModuleType) or not isinstance(
                getattr(mod, "__file__", None), str):
            continue
        try:
            items = list(vars(mod).items())
        except TypeError:  # pragma: no cover - a module without a __dict__
            continue
        for attr, value in items:
            if value is cls and is_project(types.SimpleNamespace(__module__=name)):
                return name, attr
    return None


def project_class(root: str, excluded: Tuple[str, ...]) -> Callable[[Any], bool]:
    """Whether a class was defined in a project file (the call trace's notion of project code:
    under ``root``, not in the store, a virtualenv or a skipped folder; not ``__main__``)."""
    keys = _calls._keys(root, excluded)

    def is_project(cls: Any) -> bool:
        mod = sys.modules.get(getattr(cls, "__module__", None) or "")
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str):
            return False
        key = _calls._key_of(keys, f, root, excluded)
        return key is not None and key != "<__main__>"

    return is_project


def _path(head: Any, attrs: Iterable[str]) -> Any:
    obj = head
    for a in attrs:
        if not isinstance(obj, (types.ModuleType, type)):
            return None
        try:
            obj = vars(obj).get(a)
        except TypeError:
            return None
        if obj is None:
            return None
    return obj


def _chain(ins: List[Any], i: int) -> Tuple[Any, List[str]]:
    """The instruction a chain of attribute loads ending at ``ins[i]`` starts from, and the
    attribute names, in order (``models.base.Base``: LOAD_GLOBAL models, [base, Base])."""
    attrs: List[str] = []
    j = i
    while j >= 0 and ins[j].opname in _LOADS and ins[j].argval != NAME:
        attrs.append(str(ins[j].argval))
        j -= 1
    return (ins[j] if j >= 0 else None), attrs[::-1]


def _resolve(head: Any, attrs: List[str], env: Dict[str, Any]) -> Tuple[bool, Any]:
    """(whether the chain starts from a global name, the object it leads to)."""
    if head is None or head.opname not in _GLOBAL:
        return False, None
    import builtins

    name = str(head.argval)
    return True, _path(env.get(name, vars(builtins).get(name)), attrs)


def receivers(code: Any, env: Dict[str, Any], owner: Optional[type],
              first: Optional[str] = None) -> Tuple[List[type], bool]:
    """The classes ``code`` calls ``__subclasses__`` on, as far as its bytecode says, and
    whether some receiver is not known (a local other than a method's first argument, the
    result of a call, a ``getattr`` by name). ``first``: the name that holds ``owner`` (or a
    class below it) in ``code``: the first argument of the method of ``owner`` that ``code``
    is, or is nested in (bound_first); None: no name does."""
    import dis

    try:
        ins = list(dis.get_instructions(code))
    except Exception:  # noqa: BLE001 - no bytecode to read
        return [], True
    found: List[type] = []
    unknown = NAME in code.co_consts  # getattr(cls, "__subclasses__"): no receiver to read
    if owner is not None and issubclass(owner, type):  # a metaclass's method: its cls is a
        owner, first = None, None  # class made with it, not the metaclass or below it
    for i, x in enumerate(ins):
        if x.opname not in _LOADS or x.argval != NAME:
            continue
        head, attrs = _chain(ins, i - 1)
        ok, obj = _resolve(head, attrs, env)
        if ok and obj is type:  # type.__subclasses__(X): X, the next load, is the receiver
            k = i + 1
            while k + 1 < len(ins) and ins[k + 1].opname in _LOADS:
                k += 1
            head, attrs = _chain(ins, k) if k < len(ins) else (None, [])
            ok, obj = _resolve(head, attrs, env)
        if ok and isinstance(obj, type):
            found.append(obj)
        elif not ok and owner is not None and attrs in ([], ["__class__"]) and _first_arg(
                head, first):
            found.append(owner)  # cls.__subclasses__() in a classmethod: cls is owner or below
        else:
            unknown = True
    return found, unknown


def _first_arg(head: Any, first: Optional[str]) -> bool:
    """Whether instruction ``head`` loads ``first``: the method's first argument (or, in a
    comprehension or nested function of the method, the free variable of that name)."""
    op = str(getattr(head, "opname", ""))
    if first is None or not op.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE")):
        return False
    return head.argval == first


def bound_first(owner: Optional[type], qualname: str, code: Any) -> Optional[str]:
    """The name in ``code`` that holds ``owner`` or a class below it: the first argument of
    the method of ``owner`` (not a staticmethod) that ``code`` is, or is nested in (a
    comprehension: a free variable of that name); None when there is none (a parameter that
    happens to be called ``cls`` names whatever it is given)."""
    if owner is None:
        return None
    parts = qualname.split(".")
    try:
        method = parts[parts.index(owner.__name__) + 1]
    except (ValueError, IndexError):
        return None
    raw = vars(owner).get(method)
    if raw is None or isinstance(raw, staticmethod):
        return None
    fn = getattr(raw, "__func__", raw)
    outer = getattr(fn, "__code__", None)
    if outer is None or not outer.co_argcount:
        return None
    name = str(outer.co_varnames[0])
    if code is outer:
        return name
    return name if name in code.co_freevars else None


def _owner(mod: types.ModuleType, qualname: str) -> Optional[type]:
    """The innermost class a qualname names from its module (a method's, or code in one)."""
    obj: Any = mod
    owner: Optional[type] = None
    for part in qualname.split("."):
        if part.startswith("<"):
            break
        try:
            obj = vars(obj).get(part)
        except TypeError:
            break
        if obj is None:
            break
        if isinstance(obj, type):
            owner = obj
    return owner


def _all_roots(is_project: Callable[[Any], bool], modules: Iterable[types.ModuleType]
               ) -> List[type]:
    """Every project class hierarchy loaded now, by its roots: the project classes with no
    project base that have subclasses, and the library classes a project class derives from
    directly (``nn.Module``, ``Exception``)."""
    roots: Dict[int, type] = {}
    for mod in modules:
        try:
            items = list(vars(mod).values())
        except TypeError:
            continue
        for cls in items:
            if not isinstance(cls, type) or cls.__module__ != mod.__name__:
                continue
            bases = [b for b in cls.__bases__ if b is not object]
            for b in bases:
                if not is_project(b):
                    roots[id(b)] = b
            if not any(is_project(b) for b in bases) and type.__subclasses__(cls):
                roots[id(cls)] = cls
    return list(roots.values())


def found(codes: Iterable[Any], root: str, excluded: Tuple[str, ...],
          before: Optional[Set[int]] = None) -> List[Entry]:
    """The Trace.subclasses record for the project code objects ``codes`` that ran: [] when
    none of them names ``__subclasses__`` (the common case: one test per code). ``before``:
    the ids of the project modules loaded when the step began (trace/modules.py), so each
    subclass says whether its module was imported while the step ran (the check imports it
    again first) or was there already (the check finds it only if the pipeline's imports
    still load it: a plugin import removed is a change); None: every module counts as
    imported by the step."""
    hits = [c for c in codes if asks(c)]
    if not hits:
        return []
    is_project = project_class(root, excluded)
    keys = _calls._keys(root, excluded)
    hits = [c for c in hits if _calls._key_of(keys, c.co_filename, root, excluded)
            not in (None, "<__main__>")]
    if not hits:
        return []
    by_file = modules_by_file()
    roots: Dict[int, type] = {}
    everything = False
    for code in hits:
        mod = by_file.get(os.path.abspath(code.co_filename))
        if mod is None:
            everything = True
            continue
        try:
            qual = _calls.code_qualname(code)
            owner = _owner(mod, qual)
            got, unknown = receivers(code, vars(mod), owner, bound_first(owner, qual, code))
        except Exception:  # noqa: BLE001 - unreadable: every hierarchy counts
            got, unknown = [], True
        for cls in got:
            roots[id(cls)] = cls
        everything = everything or unknown
    if everything:
        project_mods = [m for f, m in by_file.items()
                        if _calls._key_of(keys, f, root, excluded) not in (None, "<__main__>")]
        for cls in _all_roots(is_project, project_mods):
            roots[id(cls)] = cls
    out: List[Entry] = []
    for cls in roots.values():
        if cls is object or cls is type or not named(cls):
            continue  # a class no name finds again could not be checked
        subs = [[m, q, before is None or id(sys.modules.get(m)) not in before]
                for m, q in descendants(cls, is_project)]
        out.append([str(cls.__module__), str(cls.__qualname__), subs])
    out.sort(key=lambda e: (e[0], e[1]))
    return out
