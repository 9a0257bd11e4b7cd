"""serialize: deterministic, round-tripping value encoding."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenbuild.serialize import Unencodable, canonical, dumps, loads

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(plain)
def test_round_trip_and_determinism(value):
    data = dumps(value)
    assert loads(data) == value
    assert dumps(loads(data)) == data


def test_types_are_kept_apart():
    assert dumps([1, 2]) != dumps((1, 2))
    assert dumps(1) != dumps(1.0) != dumps(True)
    assert dumps("1") != dumps(b"1")
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})
    assert dumps({"a": 1, "b": 2}) != dumps({"b": 2, "a": 1})  # insertion order is kept
    assert list(loads(dumps({"b": 2, "a": 1}))) == ["b", "a"]


def test_special_values():
    assert math.isnan(loads(dumps(float("nan"))))
    assert loads(dumps(float("-inf"))) == float("-inf")
    assert loads(dumps({1, 2, 3})) == {1, 2, 3}
    assert canonical({3, 1, 2}) == canonical({1, 2, 3})
    assert loads(dumps(frozenset({"x"}))) == frozenset({"x"})
    assert loads(dumps(Path("a/b"))) == Path("a/b")
    assert canonical(Path("a/b")) == canonical(PurePosixPath("a/b"))
    assert loads(dumps(2 + 3j)) == 2 + 3j


def test_numpy_arrays_are_canonical():
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.asfortranarray(a)
    assert dumps(a) == dumps(b)
    out = loads(dumps(a))
    assert out.dtype == a.dtype and out.shape == a.shape and (out == a).all()
    assert dumps(a) != dumps(a.astype(np.int64))


class Thing:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Thing) and other.x == self.x


def test_other_objects_fall_back_to_pickle():
    assert loads(dumps(Thing(3))) == Thing(3)
    assert dumps(Thing(3)) == dumps(Thing(3))
    with pytest.raises(Unencodable):
        canonical(Thing(3))


def test_recursive_structure_is_refused():
    x: list = []
    x.append(x)
    with pytest.raises(Unencodable):
        canonical(x)
