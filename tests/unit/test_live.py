"""fingerprint.live: a class's attributes as they are now, a singledispatch registry."""

from __future__ import annotations

import abc
import enum
import functools
import importlib
import itertools
import sys
import textwrap
import threading
from typing import Any, List

from zenbuild.fingerprint import live
from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.fingerprint.values import ValueEncoder

_counter = itertools.count()


def _encoder(project: Any = ()) -> ValueEncoder:
    return ValueEncoder(lambda v: v in project, lambda m: None, lambda v: v, "k")


def _relu(x: int) -> int:
    return max(x, 0)


def test_a_class_with_only_its_own_methods_adds_nothing() -> None:
    class Plain:
        def m(self) -> int:
            return 1

        @classmethod
        def c(cls) -> int:
            return 2

        @staticmethod
        def s() -> int:
            return 3

        @property
        def p(self) -> int:
            return 4

        @p.setter
        def p(self, v: int) -> None:
            pass

        @functools.cached_property
        def cp(self) -> int:
            return 5

    assert live.class_attributes(Plain, _encoder()) == b""


def test_attributes_set_from_outside_are_in_and_change_it() -> None:
    class Model:
        LR = 0.1

        def lr(self) -> float:
            return self.LR

    first = live.class_attributes(Model, _encoder())
    Model.LR = 0.5
    second = live.class_attributes(Model, _encoder())
    Model.NEW = 1  # type: ignore[attr-defined]
    third = live.class_attributes(Model, _encoder())
    assert len({first, second, third}) == 3
    enc = _encoder(project=(_relu,))
    Model.ACT = staticmethod(_relu)  # type: ignore[attr-defined]
    assert b"ACT=static(code:" in live.class_attributes(Model, enc)
    assert enc.refs == [_relu]  # its code is analyzed as a helper


def test_a_method_rebound_to_another_of_the_statement_is_seen() -> None:
    class M:
        def a(self) -> int:
            return 1

        def b(self) -> int:
            return 2

    assert live.class_attributes(M, _encoder()) == b""
    M.a = M.b  # type: ignore[method-assign]
    assert live.class_attributes(M, _encoder()) == b"a=own:" + M.b.__qualname__.encode()


def test_a_registry_dict_names_its_classes() -> None:
    class Base:
        REGISTRY: dict = {}

        def __init_subclass__(cls) -> None:
            Base.REGISTRY[cls.__name__] = cls

    class A(Base):
        pass

    enc = _encoder(project=(A,))
    assert b"code:" in live.class_attributes(Base, enc)
    assert enc.refs == [A]


def test_machinery_and_runtime_caches_are_left_out() -> None:
    class Color(enum.Flag):
        R = 1
        G = 2

    before = live.class_attributes(Color, _encoder())
    assert Color(3)  # a pseudo-member, cached in _value2member_map_ at run time
    assert live.class_attributes(Color, _encoder()) == before == b""

    class Abstract(abc.ABC):
        @abc.abstractmethod
        def f(self) -> None: ...

    assert live.class_attributes(Abstract, _encoder()) == b""

    class Slotted:
        __slots__ = ("a",)

    assert live.class_attributes(Slotted, _encoder()) == b""


def test_a_lock_or_an_address_repr_is_stable() -> None:
    class Holder:
        LOCK = threading.Lock()
        OBJ = object()

    a = live.class_attributes(Holder, _encoder())
    assert b"0x" not in a
    assert a == live.class_attributes(Holder, _encoder())


def test_a_singledispatch_registry_is_its_types_and_code() -> None:
    @functools.singledispatch
    def enc(x: Any) -> str:
        return "generic"

    @enc.register
    def _(x: int) -> str:
        return "int"

    assert live.is_singledispatch(enc)
    assert not live.is_singledispatch(_relu)
    ours = (enc.__wrapped__,)  # type: ignore[attr-defined]
    first = live.dispatch_bytes(enc, _encoder(ours), 0)

    @enc.register
    def _b(x: bool) -> str:
        return "bool"

    assert live.dispatch_bytes(enc, _encoder(ours), 0) != first


def _fingerprint(tmp_path: Any, source: str, setup: str = "") -> List[Any]:
    mod = "zb_livemod"  # one name: identities are part of the encoding
    root = tmp_path / str(next(_counter))
    root.mkdir()
    (root / f"{mod}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))
    try:
        m = importlib.import_module(mod)
    finally:
        sys.path.remove(str(root))
    try:
        exec(setup, {"m": m})
        info = CodeFingerprinter(str(root)).code(m.run.fn)
    finally:
        del sys.modules[mod]
    return sorted((k.split(".", 1)[1], v) for k, v in info.items.items())


MODEL = '''
from functools import singledispatch
from zenbuild import step


class Model:
    LR = 0.1

    def lr(self):
        return self.LR


@singledispatch
def enc(x):
    return "generic"


@enc.register
def _(x: int):
    return "int"


@enc.register
def _(x: str):
    return "str"


@step
def run() -> str:
    return f"{Model().lr()} {enc(1)}"
'''


def test_the_step_key_follows_class_state_and_dispatch(tmp_path: Any) -> None:
    base = _fingerprint(tmp_path, MODEL)
    assert base == _fingerprint(tmp_path, MODEL)
    assert _fingerprint(tmp_path, MODEL, "m.Model.LR = 0.5") != base
    assert _fingerprint(tmp_path, MODEL, "m.enc.register(bool, lambda x: 'b')") != base
    # the two `def _` share an item name; the dispatch item holds both digests
    edited = MODEL.replace('return "str"', 'return "text"')
    assert _fingerprint(tmp_path, edited) != base


def test_a_library_objects_private_state_is_left_out_a_public_one_is_in() -> None:
    class Orm:
        _manager = threading.Event()  # a library metaclass's bookkeeping, say
        _items: dict = {}
        table = threading.Event()

    got = live.class_attributes(Orm, _encoder())
    assert got.startswith(b"_items=") and b"_manager" not in got and b"table=" in got


def test_a_library_dispatcher_counts_only_the_projects_registrations() -> None:
    @functools.singledispatch
    def lib(x: Any) -> str:
        return "generic"

    class Ours:
        pass

    base = live.dispatch_bytes(lib, _encoder(), 0)
    lib.register(float, lambda x: "float")  # a library's own (lazy) registration
    assert live.dispatch_bytes(lib, _encoder(), 0) == base
    lib.register(Ours, _relu)  # the project's: its type and code count
    enc = _encoder(project=(Ours, _relu))
    assert live.dispatch_bytes(lib, enc, 0) != base
    assert set(map(id, enc.refs)) == {id(Ours), id(_relu)}
