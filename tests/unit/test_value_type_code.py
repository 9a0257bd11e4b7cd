"""The code registered to store a type (register_value_type, @value_type) is part of the type's
code in fingerprints: wherever a step uses the class (by name, through a library module's
attribute, an import in its body, a module constant, a param's class) and in value_code."""

from __future__ import annotations

import fractions
import importlib
import itertools
import sys
import textwrap
from typing import Any, Dict, List

import pytest

from zenbuild.fingerprint.code import CodeFingerprinter
from zenbuild.serialize import register_value_type
from zenbuild.serialize.materialize import (
    _FolderReducer,
    register_lazy,
    registration,
    value_type,
)
from zenbuild.serialize.pickler import REDUCERS

_counter = itertools.count()


@pytest.fixture
def reducers():
    """REDUCERS as it was, after the test (registrations are process-wide). The lazy
    registrations (polars) are made first, as the first value stored would: restoring a
    REDUCERS from before them would lose them for the rest of the session."""
    register_lazy()
    saved = dict(REDUCERS)
    yield REDUCERS
    REDUCERS.clear()
    REDUCERS.update(saved)


def _module(root, source: str) -> Any:
    name = f"vtmod_{next(_counter)}"
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


def _items(root, fn) -> Dict[str, str]:
    return CodeFingerprinter(str(root), track_packages=False).code(fn).items


def _registered_items(items: Dict[str, str]) -> List[str]:
    return sorted(k for k in items if "<registered" in k or "<lambda>" in k
                  or "make_fraction" in k)


FRACS = '''
import fractions


def make_fraction(n, d):
    return fractions.Fraction(n, d)


def reduce_fraction(f):
    return (make_fraction, (f.numerator, f.denominator))


reduce_other = lambda f: (make_fraction, (f.numerator, 1))  # noqa: E731
'''

# every way a step reaches the library class fractions.Fraction
STEPS = '''
import fractions
from fractions import Fraction

DEFAULT = Fraction(1, 3)
KINDS = [Fraction, int]


def by_name():
    return Fraction(1, 3)


def by_attribute():
    return fractions.Fraction(1, 3)


def by_import_in_body():
    from fractions import Fraction as F
    return F(1, 3)


def by_constant():
    return DEFAULT


def by_container():
    return KINDS[0](1, 3)
'''

WAYS = ["by_name", "by_attribute", "by_import_in_body", "by_constant", "by_container"]


@pytest.mark.parametrize("way", WAYS)
def test_a_project_reducer_for_a_library_class_joins_the_key(tmp_path, reducers, way):
    fracs = _module(tmp_path, FRACS)
    steps = _module(tmp_path, STEPS)
    fn = getattr(steps, way)
    assert _registered_items(_items(tmp_path, fn)) == []
    register_value_type(fractions.Fraction, fracs.reduce_fraction)
    items = _items(tmp_path, fn)
    assert f"{fracs.__name__}.reduce_fraction" in items, items  # the reducer
    assert f"{fracs.__name__}.make_fraction" in items, items  # the function it names
    assert "fractions.Fraction.<registered>" in items, items
    # another reducer: another key
    register_value_type(fractions.Fraction, fracs.reduce_other)
    again = _items(tmp_path, fn)
    assert again != items and f"{fracs.__name__}.reduce_fraction" not in again, again


def test_value_code_of_a_library_class_is_its_registered_code(tmp_path, reducers):
    fracs = _module(tmp_path, FRACS)
    assert CodeFingerprinter(str(tmp_path)).value_code(fractions.Fraction) is None
    register_value_type(fractions.Fraction, fracs.reduce_fraction)
    first = CodeFingerprinter(str(tmp_path)).value_code(fractions.Fraction)
    assert first is not None
    register_value_type(fractions.Fraction, fracs.reduce_other)
    assert CodeFingerprinter(str(tmp_path)).value_code(fractions.Fraction) not in (None, first)
    # a library class with no registration, and a library function: no code of the project
    assert CodeFingerprinter(str(tmp_path)).value_code(fractions.Decimal) is None
    assert CodeFingerprinter(str(tmp_path)).value_code(textwrap.dedent) is None


PROJECT_CLASSES = '''
class Base:
    def __init__(self, w):
        self.w = w


class Sub(Base):
    pass


def rebuild(w):
    return Sub(w)


def uses_sub():
    return Sub([1])


reduce_a = lambda b: (rebuild, (b.w,))  # noqa: E731
reduce_b = lambda b: (rebuild, (b.w + b.w,))  # noqa: E731
'''


def test_a_registration_on_a_base_class_counts_for_a_subclass(tmp_path, reducers):
    m = _module(tmp_path, PROJECT_CLASSES)
    before = _items(tmp_path, m.uses_sub)
    register_value_type(m.Base, m.reduce_a)
    after = _items(tmp_path, m.uses_sub)
    assert f"{m.__name__}.Sub.<registered>" in after, after
    assert any("<lambda>" in k for k in after), after
    assert set(before) < set(after)
    fp = CodeFingerprinter(str(tmp_path))
    first = fp.value_code(m.Sub)
    register_value_type(m.Base, m.reduce_b)
    assert CodeFingerprinter(str(tmp_path)).value_code(m.Sub) != first


FOLDER = '''
from pathlib import Path


class Blob:
    def __init__(self, text):
        self.text = text

    def save(self, folder):
        (folder / "t").write_text(self.text)

    @classmethod
    def load(cls, folder):
        return cls((folder / "t").read_text())

    @classmethod
    def load_upper(cls, folder):
        return cls((folder / "t").read_text().upper())


def uses_blob():
    return Blob("x")
'''


def test_value_type_called_on_a_class_counts_its_methods_and_names(tmp_path, reducers):
    """value_type(cls, load=...) called outside the class statement (which the class's code
    does not show): which methods save and load is part of the key."""
    m = _module(tmp_path, FOLDER)
    value_type(m.Blob)
    reg = registration(m.Blob)
    assert reg is not None and isinstance(reg.reduce, _FolderReducer)
    assert (reg.on, reg.save, reg.load) == (m.Blob, "save", "load")
    first = _items(tmp_path, m.uses_blob)
    assert f"{m.__name__}.Blob.<registered>" in first, first
    value_type(m.Blob, load="load_upper")
    assert _items(tmp_path, m.uses_blob) != first


def test_zenbuild_s_own_lazy_registrations_add_nothing(tmp_path, reducers):
    """polars' frames are registered only once a value is stored (serialize.materialize
    LAZY): a key that counted them would differ between a run that stored a frame before
    fingerprinting and one that did not."""
    pl = pytest.importorskip("polars")
    from zenbuild.serialize.materialize import _register_polars

    m = _module(tmp_path, "import polars as pl\n\n\ndef make():\n    return pl.DataFrame({'a': [1]})\n")
    REDUCERS.pop(pl.DataFrame, None)
    REDUCERS.pop(pl.Series, None)
    before = _items(tmp_path, m.make)
    _register_polars()
    assert registration(pl.DataFrame) is not None
    assert _items(tmp_path, m.make) == before


def test_registration_finds_the_first_class_of_the_mro(reducers):
    class A:
        pass

    class B(A):
        pass

    def ra(x: Any) -> Any:
        return (A, ())

    assert registration(B) is None
    register_value_type(A, ra)
    got = registration(B)
    assert got is not None and got.on is A and got.reduce is ra and not got.save


CONFIG = '''
import dataclasses


@dataclasses.dataclass
class Cfg:
    n: int


def rebuild(n):
    return Cfg(n)


reduce_a = lambda c: (rebuild, (c.n,))  # noqa: E731
reduce_b = lambda c: (rebuild, (c.n + 1,))  # noqa: E731
'''


def test_a_param_s_class_brings_its_registered_code(tmp_path, reducers):
    """A config object passed as a param: its class's code is in the param's encoding
    (params.encode_param with value_code), and so is the code registered for it."""
    from zenbuild.fingerprint.params import encode_param

    m = _module(tmp_path, CONFIG)

    def encoded() -> bytes:
        return encode_param(m.Cfg(1), str(tmp_path), CodeFingerprinter(str(tmp_path)).value_code)

    register_value_type(m.Cfg, m.reduce_a)
    first = encoded()
    assert encoded() == first
    register_value_type(m.Cfg, m.reduce_b)
    assert encoded() != first
