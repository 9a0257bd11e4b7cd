"""The canonical pickle depends on a value, not on which of its immutable parts are one object
or on what the process did with it before: a str or bytes equal to an earlier one is written
the same way whether it is that object or a copy (pickle's memo works by identity, and
interning differs between the main process and a -j or Dask worker); pandas' lazily filled
``_cache`` dicts and pyarrow's unused validity bitmaps are left out. Mutable objects keep
their identity: shared lists stay shared, and recursive values load back."""

from __future__ import annotations

import decimal
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any, List

import pytest

from zenbuild.serialize import dumps, loads, value_digest
from zenbuild.serialize.pickler import canonical_pickle


@dataclass
class Rec:
    kind: str
    value: int


@dataclass
class Node:
    name: str
    kids: List[Any] = field(default_factory=list)


class Holder:
    """A plain object, so that what it holds is pickled (plain data alone has the canonical
    encoding, not a pickle)."""

    def __init__(self, x: Any) -> None:
        self.x = x


def fresh(s: str) -> str:
    """An equal str that is another object (as a worker gets one through a pipe)."""
    out = "".join(list(s))
    assert out == s and (out is not s or len(s) < 2)
    return out


def fresh_bytes(b: bytes) -> bytes:
    out = bytes(bytearray(b))
    assert out == b and out is not b
    return out


# ---- strings: the same value with its strings shared or not ---------------------------------


def test_a_field_value_equal_to_a_field_name_pickles_the_same_as_a_copy_of_it() -> None:
    shared = Rec(kind="value", value=1)  # "value" is the interned attribute name itself
    assert shared.kind is next(k for k in vars(shared) if k == "value")
    copied = Rec(kind=fresh("value"), value=1)
    assert dumps(shared) == dumps(copied)
    assert value_digest(shared) == value_digest(copied)


def test_a_dict_key_equal_to_a_module_name_pickles_the_same_as_a_copy_of_it() -> None:
    shared = {"uuid": uuid.UUID(int=5)}  # the key is the interned module name "uuid"
    copied = {fresh("uuid"): uuid.UUID(int=5)}
    assert dumps(shared) == dumps(copied)


def test_a_value_and_its_copy_through_a_pipe_give_the_same_bytes() -> None:
    for v in (Rec(kind="value", value=1), {"uuid": uuid.UUID(int=5)},
              Node("kids", [Node("name"), Node("name")]),
              Holder({"a": ["a", "b", "a"], "b": ("b", "a"), "name": {"x", "name"}})):
        copy = pickle.loads(pickle.dumps(v, protocol=5))
        assert dumps(copy) == dumps(v), v
        assert dumps(loads(dumps(v))) == dumps(v), v


def test_shared_and_distinct_equal_strings_and_bytes_give_the_same_bytes() -> None:
    s, b, big = "some text", b"some bytes", b"x" * 5000
    shared = Holder([s, s, b, b, big, big, {s: s}])
    distinct = Holder([s, fresh(s), b, fresh_bytes(b), big, fresh_bytes(big),
                       {fresh(s): fresh(s)}])
    assert canonical_pickle(shared) == canonical_pickle(distinct)
    back = loads(dumps(distinct))
    assert back.x == distinct.x


def test_strings_in_sets_and_in_the_names_of_classes_load_back() -> None:
    v = Holder([{"zenbuild.set", "a"}, {"a", "b"}, frozenset({"b"}), "Holder", Rec, "Rec"])
    back = loads(dumps(v))
    assert back.x == v.x
    assert dumps(back) == dumps(v)


def test_only_equal_strings_are_merged_not_merely_equal_values() -> None:
    # equality does not mean the same pickle for every type: these stay two values
    v = Holder([decimal.Decimal("1.0"), decimal.Decimal("1.00"), 0.0, -0.0, 1, True])
    back = loads(dumps(v))
    assert [str(x) for x in back.x] == ["1.0", "1.00", "0.0", "-0.0", "1", "True"]


def test_big_ints_and_floats_do_not_depend_on_identity() -> None:
    n, f = 10**30 + 1, 1.2345
    assert canonical_pickle(Holder([n, n, f, f])) == canonical_pickle(
        Holder([n, int(str(n)), f, float(repr(f))]))


# ---- mutable objects keep their identity --------------------------------------------------


def test_a_shared_list_stays_shared_and_differs_from_two_equal_lists() -> None:
    inner = ["a", "b"]
    shared = Holder([inner, inner])
    two = Holder([["a", "b"], ["a", "b"]])
    back = loads(dumps(shared))
    assert back.x[0] is back.x[1]
    back.x[0].append("c")
    assert back.x[1] == ["a", "b", "c"]
    apart = loads(dumps(two))
    assert apart.x[0] is not apart.x[1]
    assert dumps(shared) != dumps(two)  # sharing is part of the value


def test_recursive_values_load_back() -> None:
    root = Node("root")
    root.kids.append(root)
    d: dict = {"name": "d"}
    d["self"] = d
    v = Holder([root, d, root])
    back = loads(dumps(v))
    r, dd, r2 = back.x
    assert r is r2 and r.kids[0] is r and r.name == "root"
    assert dd["self"] is dd and dd["name"] == "d"
    assert dumps(back) == dumps(v)


# ---- pandas and pyarrow: caches and layouts ------------------------------------------------


def _touch(obj: Any) -> None:
    """What a process may do with pandas objects before it stores one: fills their caches."""
    import pandas as pd

    seen: List[Any] = [repr(obj)]
    if isinstance(obj, pd.DataFrame):
        seen += [obj.T, obj.columns.is_unique, obj.columns.inferred_type]
        for i in range(obj.shape[1]):
            s = obj.iloc[:, i]
            seen += [getattr(s.dtype, "index_class", None), pd.Index(s.array), s.is_unique]
    if isinstance(obj, (pd.Series, pd.DataFrame)):
        idx = obj.index
        seen += [idx.is_unique, idx.is_monotonic_increasing, idx.inferred_type, idx._engine]
        data = getattr(idx, "_data", None)
        if data is not None and hasattr(data, "_creso"):
            seen += [repr(data), data._creso]
    assert seen


def _pandas_values() -> dict:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    mi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])
    return {
        "Int64": lambda: pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64")}),
        "boolean": lambda: pd.DataFrame({"b": pd.array([True, None], dtype="boolean")}),
        "period_range": lambda: pd.DataFrame({"p": pd.period_range("2020-01", periods=3,
                                                                   freq="M")}),
        "SparseArray": lambda: pd.DataFrame({"s": pd.arrays.SparseArray([0, 0, 1, 0])}),
        "DatetimeIndex": lambda: pd.Series([1, 2, 3], index=pd.date_range("2020", periods=3)),
        "MultiIndex columns": lambda: pd.DataFrame(np.arange(4).reshape(2, 2), columns=mi),
        "MultiIndex columns .T": lambda: pd.DataFrame(np.arange(4).reshape(2, 2),
                                                      columns=mi).T,
        "Categorical": lambda: pd.Series(pd.Categorical(["x", "y", "x"])),
        "string": lambda: pd.DataFrame({"s": pd.array(["a", None, "c"], dtype="string")}),
    }


@pytest.mark.parametrize("name", list(_pandas_values()))
def test_a_pandas_value_pickles_the_same_after_its_caches_are_filled(name: str) -> None:
    make = _pandas_values()[name]
    value = make()
    before = canonical_pickle(value)
    _touch(value)
    _touch(make())  # and another one sharing its dtype instances
    assert canonical_pickle(value) == before
    assert canonical_pickle(make()) == before


@pytest.mark.parametrize("name", list(_pandas_values()))
def test_a_pandas_value_and_its_copy_through_a_pipe_give_the_same_bytes(name: str) -> None:
    value = _pandas_values()[name]()
    _touch(value)
    copy = pickle.loads(pickle.dumps(value, protocol=5))
    assert dumps(copy) == dumps(value)
    back = loads(dumps(value))
    assert back.equals(value)
    _touch(back)  # what was left out is computed again when needed
    assert dumps(back) == dumps(value)


def test_an_arrow_column_in_one_chunk_or_several_gives_the_same_bytes() -> None:
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    dtype = pd.ArrowDtype(pa.string())
    one = pd.DataFrame({"s": pd.array(pa.chunked_array([["x", "y", "z"]]), dtype=dtype)})
    two = pd.DataFrame({"s": pd.array(pa.chunked_array([["x", "y"], ["z"]]), dtype=dtype)})
    _touch(two)
    assert dumps(one) == dumps(two)


def test_an_arrow_array_with_an_unused_validity_bitmap_pickles_as_it_loads() -> None:
    pa = pytest.importorskip("pyarrow")
    plain = pa.array(["a", "b"])
    assert plain.buffers()[0] is None

    def with_bitmap() -> Any:  # as pandas makes some (an all-valid bitmap, count unknown)
        a = pa.Array.from_buffers(plain.type, 2, [pa.py_buffer(b"\x03"),
                                                  *plain.buffers()[1:]], null_count=-1)
        assert a.buffers()[0] is not None
        return a

    uncounted = with_bitmap()
    counted = with_bitmap()
    assert counted.null_count == 0  # pyarrow counts and keeps the count
    assert canonical_pickle(uncounted) == canonical_pickle(counted) == canonical_pickle(plain)
    some_null = pa.Array.from_buffers(plain.type, 2, [pa.py_buffer(b"\x01"),
                                                      *plain.buffers()[1:]], null_count=-1)
    assert loads(dumps(Holder(some_null))).x.to_pylist() == ["a", None]
    table = pa.table({"s": with_bitmap(), "n": pa.array([1, None]),
                      "st": pa.StructArray.from_arrays([with_bitmap()], names=["x"])})
    assert dumps(pickle.loads(pickle.dumps(table))) == dumps(table)
    assert loads(dumps(table)).equals(table)


@pytest.mark.parametrize("dtype", ["M8[ns]", ">f8", "U3", "O", "f8"])
def test_equal_dtypes_pickle_the_same_whether_or_not_they_are_one_object(dtype: str) -> None:
    # which parts of a value share one dtype object is not kept by a trip through a pipe
    # (pandas 2's python-backed string columns came back with a dtype made again), so equal
    # values must pickle the same either way
    np = pytest.importorskip("numpy")
    one = np.dtype(dtype)
    shared = {"a": one, "b": one, "c": [one]}
    apart = {"a": np.dtype(dtype), "b": np.dtype(dtype), "c": [np.dtype(dtype)]}
    if dtype not in ("f8", "O"):  # np.dtype() gives these builtin ones as one object anyway
        assert apart["a"] is not apart["b"]
    assert dumps(apart) == dumps(shared)
    via_pipe = pickle.loads(pickle.dumps(shared, protocol=5))
    assert dumps(via_pipe) == dumps(shared)
    back = loads(dumps(shared))
    assert back == shared and back["a"].str == one.str


def test_a_dtype_with_fields_or_metadata_keeps_them() -> None:
    np = pytest.importorskip("numpy")
    for d in (np.dtype([("x", "<i4"), ("y", "<f8")]), np.dtype("f8", metadata={"unit": "m"}),
              np.dtype(("<i4", (2, 3)))):
        back = loads(dumps({"d": d}))["d"]
        assert back == d and back.metadata == d.metadata and back.fields == d.fields
        assert back.subdtype == d.subdtype
