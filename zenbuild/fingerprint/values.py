"""Digests of the values a step's code reads from module globals: constants by value (the one
value encoding of zenbuild.serialize), containers element by element, callable objects
(partials, lru_cache and other wrappers, bound methods, library instances such as
np.vectorize) by value and by the project code they wrap, library functions and classes by
identity (module and qualified name), classes made without a class statement by content."""

from __future__ import annotations

import os
import types
import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from zenbuild.digest import digest_bytes
from zenbuild.fingerprint import live
from zenbuild.graph import StepDef
from zenbuild.serialize import Unencodable, Unstable, canonical
from zenbuild.serialize.configs import classes_met

_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (dict, list, tuple, set, frozenset)
_MAX_DEPTH = 6
_CLASS_SKIP = frozenset(
    {"__dict__", "__weakref__", "__doc__", "__module__", "__qualname__", "__slots__",
     "__annotations__", "__match_args__", "__orig_bases__", "__parameters__"}
)


class UnstableConstantWarning(UserWarning):
    """A module constant has no stable encoding; its repr or type stands in for it."""


def identity(obj: Any) -> str:
    """module.qualname of a function, class or builtin; a ufunc-like object without one is
    named by its type and __name__."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str):
        return f"{mod}.{qual}"
    t = type(obj)
    name = getattr(obj, "__name__", None)
    return f"{t.__module__}.{t.__qualname__}" + (f":{name}" if isinstance(name, str) else "")


def loaded_object(module: str, qualname: str) -> Any:
    """What ``module`` (if imported) and ``qualname`` lead to, as pickle finds a function or
    class by reference; None when nothing does."""
    import sys

    cur: Any = sys.modules.get(module)
    for part in qualname.split("."):
        if cur is None:
            return None
        cur = getattr(cur, part, None)
    return cur


def named_object(obj: Any) -> bool:
    """True when ``obj`` is what its module and qualified name lead to (as pickle finds a
    function or class by reference): numpy.mean, operator.itemgetter, a ufunc's home."""
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
        return False
    found = loaded_object(mod, qual)
    return found is not None and found is obj


def value_digest(value: Any, code_of: Optional[Callable[[Any], Optional[str]]] = None) -> str:
    """The digest of a constant's value: the one value encoding zenbuild uses for results
    (``code_of``: serialize.value_digest's). Raises Unstable (pickle differs by itself) or
    the pickling error."""
    from zenbuild.serialize import value_digest as digest_of_value

    return digest_of_value(value, code_of)


def is_code(value: Any) -> bool:
    """Plain functions and classes, which are referenced, not encoded."""
    return isinstance(value, (types.FunctionType, type))


class ValueEncoder:
    """Encodes one value. Project callables it meets go to ``refs`` (their code is analyzed
    as helpers) and are named by identity in the encoding; library callables are named by
    identity, their package version goes to ``packages``. ``registered(cls)`` gives the
    (refs, packages) that the code registered for a library class adds (a project reducer
    for a library type: CodeFingerprinter._registered_refs); a project class brings its own
    when its code is analyzed."""

    def __init__(
        self,
        is_project: Callable[[Any], bool],
        package_of: Callable[[str], Any],
        relocate: Callable[[Any], Any],
        key: str,
        registered: Optional[Callable[[type], Tuple[List[Any], Dict[str, str]]]] = None,
    ) -> None:
        self.is_project = is_project
        self.package_of = package_of
        self.relocate = relocate
        self.key = key
        self.registered = registered
        self.refs: List[Any] = []
        self.packages: Dict[str, str] = {}
        self._active: Set[int] = set()
        # a project function's own code digest (fingerprint.live: dispatch implementations)
        self.own_digest: Optional[Callable[[Any], Optional[str]]] = None

    def digest(self, value: Any) -> str:
        return digest_bytes(self.encode(value, 0))

    def _package(self, module: Optional[str]) -> None:
        if module:
            pkg = self.package_of(module)
            if pkg:
                self.packages[pkg[0]] = pkg[1]

    def encode(self, v: Any, depth: int) -> bytes:
        if isinstance(v, _PLAIN) or isinstance(v, os.PathLike):
            try:
                return b"d" + canonical(self.relocate(v))
            except Unencodable:
                pass
        if depth > _MAX_DEPTH:
            return b"?" + identity(type(v)).encode()
        if id(v) in self._active:
            return b"<cycle>"
        self._active.add(id(v))
        try:
            return self._encode(v, depth)
        finally:
            self._active.discard(id(v))

    def _code(self, v: Any) -> bytes:
        """A function or class: project code is a reference, library code an identity."""
        if self.is_project(v):
            self.refs.append(v)
            return b"code:" + identity(v).encode()
        self._package(getattr(v, "__module__", None))
        if isinstance(v, type):
            self._library_class(v)
        return b"lib:" + identity(v).encode()

    def _named(self, obj: Any) -> None:
        """value_digest's code_of: note a class or function a pickle names (no digest in
        the encoding: the closure carries the project code's own)."""
        if isinstance(obj, (type, types.FunctionType)):
            self._code(obj)
        return None

    def _library_class(self, cls: type) -> None:
        if self.registered is not None:
            refs, packages = self.registered(cls)
            self.refs.extend(refs)
            self.packages.update(packages)

    def _encode(self, v: Any, depth: int) -> bytes:
        import enum
        import functools

        d = depth + 1
        if isinstance(v, StepDef):
            v = v.fn
        if isinstance(v, types.ModuleType):
            if self.is_project(v):
                self.refs.append(v)
            else:
                self._package(v.__name__)
            return b"module:" + v.__name__.encode()
        if isinstance(v, enum.Enum):
            return b"enum(%s,%s,%s)" % (self._code(type(v)), v.name.encode(), self.encode(v.value, d))
        if live.is_singledispatch(v):  # which implementation runs is its registry's
            return live.dispatch_bytes(v, self, d)
        if isinstance(v, types.FunctionType):
            out = self._code(v)
            wrapped = getattr(v, "__wrapped__", None)
            return out + (b"<-" + self.encode(wrapped, d) if wrapped is not None else b"")
        if isinstance(v, type):
            return self._code(v)
        if isinstance(v, functools.partial):
            return b"partial(%s,%s,%s)" % (
                self.encode(v.func, d), self.encode(v.args, d), self.encode(v.keywords, d))
        if isinstance(v, types.MethodType):
            return b"method(%s,%s)" % (self.encode(v.__func__, d), self.encode(v.__self__, d))
        if isinstance(v, (types.BuiltinFunctionType, types.MethodWrapperType,
                          types.WrapperDescriptorType, types.MethodDescriptorType)):
            owner = getattr(v, "__self__", None)
            self._package(getattr(v, "__module__", None) or getattr(type(owner), "__module__", None))
            own = b"" if owner is None or isinstance(owner, types.ModuleType) else self.encode(owner, d)
            return b"lib:" + identity(v).encode() + own
        if callable(v) and not self.is_project(v) and named_object(v):
            return self._code(v)  # numpy.mean and other library callables known by name
        if type(v) in _CONTAINERS or isinstance(v, _CONTAINERS):
            return self._container(v, d)
        wrapped = getattr(v, "__wrapped__", None)
        if wrapped is not None and callable(v):  # lru_cache, cache, other wrapper objects
            return b"wrapped(%s,%s,%s)" % (
                self._code(type(v)), self.encode(wrapped, d), self._state(v, d))
        return self._object(v, d)

    def _container(self, v: Any, d: int) -> bytes:
        try:
            with classes_met() as met:  # config objects inside (dataclasses, Enums...)
                data = b"d" + canonical(v)  # plain data: one pass in the value encoding
        except Unencodable:
            pass
        else:
            for cls in met:
                self._code(cls)  # a project class joins the closure, a library one its package
            return data
        head = identity(type(v)).encode()
        if isinstance(v, dict):
            parts = sorted(self.encode(k, d) + b"=" + self.encode(x, d) for k, x in v.items())
        elif isinstance(v, (set, frozenset)):
            parts = sorted(self.encode(x, d) for x in v)
        else:
            parts = [self.encode(x, d) for x in v]
        return head + b"[" + b",".join(b"%d:%s" % (len(p), p) for p in parts) + b"]"

    def _state(self, v: Any, d: int) -> bytes:
        """The project code an object's attributes hold (np.vectorize's pyfunc, a memo
        object's function), found without encoding its data."""
        try:
            attrs = vars(v)
        except TypeError:
            return b""
        out: List[bytes] = []
        for name in sorted(attrs):
            x = attrs[name]
            if isinstance(x, (types.FunctionType, types.MethodType, functools_partial())) or (
                isinstance(x, type) and self.is_project(x)
            ):
                out.append(name.encode() + b"=" + self.encode(x, d))
        return b",".join(out)

    def _object(self, v: Any, d: int) -> bytes:
        t = type(v)
        head = self._code(t) if self.is_project(t) else b"lib:" + identity(t).encode()
        if not self.is_project(t):
            self._package(t.__module__)
            self._library_class(t)
            if _is_resource(v):  # a pool, thread, lock, socket, open file: its type alone
                return b"resource(%s)" % head
        state = self._state(v, d)
        try:  # the classes and functions its pickle names, at any depth (a registry's dict
            # of classes), join the closure (project ones) or the packages (library ones)
            named = value_digest(v, self._named)
            return b"obj(%s,%s,%s)" % (head, named.encode(), state)
        except Unstable as e:
            warnings.warn(
                f"zenbuild: the constant {self.key} ({identity(t)}) has no stable encoding, so "
                f"its repr stands in for its value in the code fingerprint: {e}",
                UnstableConstantWarning,
                stacklevel=2,
            )
        except Exception:
            pass  # not picklable (it holds a lambda, a lock, ...): its attributes, one by one
        try:
            attrs = vars(v)
        except TypeError:
            attrs = None
        if attrs is not None:
            return b"obj(%s,%s)" % (head, self._container(dict(attrs), d))
        r = repr(v)
        if " at 0x" in r:
            r = ""
        return b"obj(%s,%s)" % (head, r.encode())

    def class_content(self, cls: type) -> bytes:
        """A class made without a class statement (namedtuple, functional Enum,
        make_dataclass): its bases, fields, defaults, members and own attributes."""
        import dataclasses
        import enum

        out: List[bytes] = [b"class:" + identity(cls).encode()]
        out.append(b"bases:" + b",".join(self.encode(b, 1) for b in cls.__bases__ if b is not object))
        if isinstance(cls, enum.EnumMeta):
            members: Dict[str, Any] = dict(cls.__members__)
            out.append(b"members:" + b",".join(
                n.encode() + b"=" + self.encode(m.value, 1) for n, m in members.items()))
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                out.append(b"field:%s=%s/%s/%s" % (
                    f.name.encode(), self.encode(f.default, 1), self.encode(f.default_factory, 1),
                    repr(f.type).encode()))
        for name in sorted(vars(cls)):
            if name in _CLASS_SKIP or (name.startswith("__") and name.endswith("__")):
                continue
            x = vars(cls)[name]
            if isinstance(x, enum.Enum) or (name.startswith("_") and name not in ("_fields", "_field_defaults")):
                continue
            if isinstance(x, (staticmethod, classmethod)):
                x = x.__func__
            if isinstance(x, types.FunctionType) and not self.is_project(x):
                continue  # generated code (namedtuple's, dataclass's): its inputs are above
            if isinstance(x, (types.FunctionType, type, *_PLAIN, *_CONTAINERS)):
                out.append(name.encode() + b"=" + self.encode(x, 1))
        new = vars(cls).get("__new__")
        defaults = getattr(new, "__defaults__", None)
        if defaults:
            out.append(b"new-defaults:" + self.encode(defaults, 1))
        return b"\0".join(out)


def functools_partial() -> type:
    import functools

    return functools.partial


# Process-local machinery a module may hold at top level (``POOL = Pool(4)``, ``LOCK =
# threading.Lock()``, an executor, a log file): not data a step computes with, and what it
# holds (worker pids, thread idents, file positions) differs in every process, so its
# attributes made the key of every step using it change on every run. Such an object counts
# by its type. (module, class name) pairs, checked only when their module is imported.
_RESOURCES = (
    ("multiprocessing.pool", "Pool"), ("multiprocessing.process", "BaseProcess"),
    ("concurrent.futures._base", "Executor"), ("threading", "Thread"),
    ("threading", "Condition"), ("threading", "Event"), ("threading", "Semaphore"),
    ("threading", "Barrier"), ("_thread", "LockType"), ("_thread", "RLock"),
    ("multiprocessing.synchronize", "SemLock"), ("multiprocessing.synchronize", "Condition"),
    ("multiprocessing.synchronize", "Event"), ("multiprocessing.queues", "Queue"),
    ("queue", "Queue"), ("socket", "socket"), ("subprocess", "Popen"), ("io", "IOBase"),
    ("sqlite3", "Connection"), ("asyncio.events", "AbstractEventLoop"),
    ("selectors", "BaseSelector"),
)


def _is_resource(v: Any) -> bool:
    import sys

    for mod, name in _RESOURCES:
        m = sys.modules.get(mod)
        cls = getattr(m, name, None) if m is not None else None
        if isinstance(cls, type) and isinstance(v, cls):
            return True
    return False
