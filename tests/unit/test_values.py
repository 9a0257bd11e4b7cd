"""serialize (values): canonical pickles (sets, torch, OmegaConf), numpy types kept, the
stability check, root-relative params, and a property test across hash seeds."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zenbuild.fingerprint.params import encode_param
from zenbuild.serialize import Unstable, canonical, dumps, loads, value_digest
from zenbuild.serialize.pickler import locate_unstable

REPO = Path(__file__).resolve().parents[2]


def _digests_in_child(values: list, seed: str, tmp_path: Path) -> list:
    """The value digests of ``values`` (passed by plain pickle) in a fresh process."""
    blob = tmp_path / "values.pkl"
    blob.write_bytes(pickle.dumps(values))
    code = ("import json, pickle, sys; from zenbuild.serialize import value_digest; "
            "vals = pickle.load(open(sys.argv[1], 'rb')); "
            "print(json.dumps([value_digest(v) for v in vals]))")
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, text=True,
                         env=env, cwd=str(REPO), check=True)
    return json.loads(out.stdout)


# ---- plain data keeps its encoding (old store entries stay valid) ----------------------


def test_plain_data_encoding_is_unchanged():
    assert dumps({"a": [1, 2.5, None, True, "x", b"y"], "b": (Path("p/q"),)}) == (
        b"ZBV1d2:s1:al6:i1;f2.5;NTs1:xb1:ys1:bt1:p3:p/q")
    assert dumps({3, 1, 2}) == b"ZBV1S3:i1;i2;i3;"


# ---- numpy types survive ----------------------------------------------------------------


@pytest.mark.parametrize("value", [np.float32(0.1), np.int64(7), np.int8(-3), np.bool_(True),
                                   np.float16(1.5), np.complex64(1 + 2j), np.uint32(9),
                                   np.str_("héllo"), np.datetime64("2024-01-02")])
def test_numpy_scalars_keep_their_type(value):
    out = loads(dumps({"v": value}))["v"]
    assert type(out) is type(value) and out == value


def test_numpy_scalar_is_not_a_python_number():
    assert dumps(np.float32(0.5)) != dumps(0.5)
    assert dumps(np.int64(7)) != dumps(7)
    assert canonical(np.int64(7)) != canonical(np.int32(7))


def test_numpy_structured_and_subclass_arrays_keep_their_type():
    rec = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    out = loads(dumps(rec))
    assert out.dtype == rec.dtype and out["b"][0] == 2.0
    masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    out = loads(dumps(masked))
    assert type(out) is np.ma.MaskedArray and out.mask.tolist() == [False, True, False]


# ---- sets inside pickled objects --------------------------------------------------------


class Holder:
    def __init__(self, labels: Any) -> None:
        self.labels = labels

    def __eq__(self, other: Any) -> bool:
        return type(other) is Holder and other.labels == self.labels


class Tags(set):  # a set subclass goes through reducer_override
    pass


def test_sets_in_objects_are_sorted(tmp_path):
    class_free = [
        types.SimpleNamespace(labels={"cat", "dog", "emu", "fox", "gnu", "hen"}),
        [frozenset({"a1", "b2", "c3", "d4"}), {("x", 1), ("y", 2), ("z", 3)}],
        types.SimpleNamespace(inner=types.SimpleNamespace(s={b"k1", b"k2", b"k3"})),
    ]
    one = _digests_in_child(class_free, "1", tmp_path)
    two = _digests_in_child(class_free, "2", tmp_path)
    assert one == two
    # in this process too, and the value comes back equal
    assert [value_digest(v) for v in class_free] == one
    assert loads(dumps(class_free[0])) == class_free[0]
    assert loads(dumps(Holder(Tags({"q", "r", "s"})))) == Holder(Tags({"q", "r", "s"}))
    assert type(loads(dumps(Holder(Tags({"q"})))).labels) is Tags


class Model(pydantic.BaseModel):  # at module level: a pickled class must be importable
    alpha: int
    beta: str = "x"


def test_pydantic_models_round_trip():
    m = Model(alpha=1, beta="y")
    out = loads(dumps(m))
    assert type(out) is Model and out == m and out.model_fields_set == {"alpha", "beta"}


PYDANTIC_CHILD = """
import sys, pydantic
from zenbuild.serialize import value_digest
class M(pydantic.BaseModel):
    alpha: int
    beta: str = "x"
    gamma: float = 0.0
    delta: list = []
print(value_digest(M(alpha=1, beta="y", gamma=2.0, delta=[1])))
"""


def test_pydantic_model_digest_is_the_same_under_other_hash_seeds():
    # pydantic v2 keeps the explicitly set fields as a set: __pydantic_fields_set__
    outs = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", PYDANTIC_CHILD], capture_output=True,
                           text=True, env=env, cwd=str(REPO), check=True)
        outs.add(r.stdout)
    assert len(outs) == 1


# ---- torch ------------------------------------------------------------------------------


TORCH_CHILD = """
import torch
from zenbuild.serialize import value_digest
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
t = torch.arange(12.0).reshape(3, 4)
print(value_digest(t), value_digest(t[:, 1:]), value_digest(m), value_digest(m.state_dict()))
"""


def test_torch_values_have_the_same_digest_in_other_processes():
    pytest.importorskip("torch")  # the dev extra installs it on x86_64 only
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", TORCH_CHILD], capture_output=True, text=True,
                           env=env, cwd=str(REPO), check=True)
        outs.add(r.stdout)
    assert len(outs) == 1, outs


def test_torch_tensors_round_trip_exactly():
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    for t in (base[:, 1:4], torch.zeros(0, 3), torch.tensor(3.5), base.to(torch.bfloat16),
              torch.tensor([True, False]), torch.ones(2, requires_grad=True)):
        out = loads(dumps({"t": t}))["t"]
        assert type(out) is torch.Tensor
        assert out.dtype == t.dtype and out.shape == t.shape
        assert out.requires_grad == t.requires_grad
        assert torch.equal(out.detach(), t.detach())
    # a view is stored by its elements, not its storage: equal tensors, equal digests
    assert value_digest([base[:, 1:4]]) == value_digest([base[:, 1:4].clone()])
    assert value_digest([base]) != value_digest([base.to(torch.float32)])
    lin = torch.nn.Linear(3, 2)
    out = loads(dumps(lin))
    assert type(out) is torch.nn.Linear and type(out.weight) is torch.nn.Parameter
    assert torch.equal(out.weight, lin.weight) and out.weight.requires_grad


# ---- OmegaConf ----------------------------------------------------------------------------


def test_omegaconf_resolver_cache_is_not_content():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"lr": 0.1, "run": {"dir": "out"}})
    before = value_digest(cfg)
    cfg._metadata.resolver_cache["now"][("%H-%M-%S",)] = "12-00-00"
    assert value_digest(cfg) == before
    cfg.lr = 0.2
    assert value_digest(cfg) != before
    out = loads(dumps(cfg))
    assert type(out) is type(cfg) and out.lr == 0.2 and out.run.dir == "out"


# ---- the stability check ------------------------------------------------------------------


class Clock:
    """An object whose pickle holds the time it was pickled at."""

    def __reduce__(self) -> Any:
        return (Clock, (), {"t": time.perf_counter_ns()})

    def __setstate__(self, state: Any) -> None:
        pass


def test_unstable_value_is_reported_with_where():
    value = {"model": types.SimpleNamespace(name="m", clock=Clock())}
    with pytest.raises(Unstable) as e:
        dumps(value)
    msg = str(e.value)
    assert "test_values.Clock" in msg and "['model'].clock" in msg and "inside a dict" in msg
    assert "plain data" in msg  # how to fix it
    assert locate_unstable(value)[0] == "['model'].clock"


def test_stable_objects_pass_the_check():
    v = [Holder({"a", "b"}), types.SimpleNamespace(x=np.arange(5))]
    out = loads(dumps(v))
    assert out[0] == v[0] and (out[1].x == v[1].x).all()


# ---- params under the project root --------------------------------------------------------


def test_param_paths_under_the_root_are_relative(tmp_path):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    assert encode_param(a / "data.txt", str(a)) == encode_param(b / "data.txt", str(b))
    assert encode_param(str(a / "d" / "x"), str(a)) == encode_param(str(b / "d" / "x"), str(b))
    assert encode_param([a, {"p": a / "q"}], str(a)) == encode_param([b, {"p": b / "q"}], str(b))
    # outside the root: absolute as before; a sibling folder sharing the prefix is outside
    assert encode_param(tmp_path / "ax", str(a)) == encode_param(tmp_path / "ax")
    assert encode_param(a / "data.txt", str(a)) != encode_param(a / "other.txt", str(a))
    # a relative path is not confused with a root-relative one
    assert encode_param(Path("data.txt"), str(a)) != encode_param(a / "data.txt", str(a))


# ---- property: sets, numpy scalars and nested objects ------------------------------------


hashable = st.text(max_size=6) | st.integers() | st.tuples(st.text(max_size=3), st.integers())
np_scalars = (st.floats(width=32, allow_nan=False).map(np.float32)
              | st.integers(-2**63, 2**63 - 1).map(np.int64)
              | st.integers(-128, 127).map(np.int8) | st.booleans().map(np.bool_))
leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
          | st.text(max_size=8) | st.binary(max_size=8) | np_scalars)
names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
values = st.recursive(
    leaves | st.sets(hashable, max_size=6) | st.frozensets(hashable, max_size=6),
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    | st.dictionaries(names, inner, max_size=3).map(lambda d: types.SimpleNamespace(**d)),
    max_leaves=15,
)


def _same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, types.SimpleNamespace):
        return _same(vars(a), vars(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(values)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_values_round_trip_with_their_types(value):
    data = dumps(value)
    assert _same(loads(data), value)
    assert dumps(value) == data
    if data.startswith(b"ZBV1"):  # a pickle also records which equal strings are one object
        assert dumps(loads(data)) == data


@given(st.lists(values, min_size=30, max_size=30))
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.data_too_large])
def test_generated_values_have_one_digest_across_hash_seeds(batch):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        one = _digests_in_child(batch, "11", Path(d))
        two = _digests_in_child(batch, "22", Path(d))
    assert one == two


# ---- Dask: arrays of the store go to workers by reference (issue 13) ----------------------


def test_arrays_in_store_blobs_are_sent_by_reference(tmp_path):
    pytest.importorskip("distributed")
    from zenbuild.executors.worker_store import pack_args
    from zenbuild.serialize.buffers import encode_value
    from zenbuild.store.db import Store

    s = Store(str(tmp_path / "store"))
    a = np.arange(1_000_000, dtype=np.float64)
    value = {"a": a, "t": a[::2], "small": np.arange(10), "name": "x"}
    digest = s.put_value(encode_value(value).parts)
    loaded = loads(s.map_blob(digest))
    packed = pack_args((loaded["a"], loaded["t"]), {"d": loaded})
    assert packed.references == 2  # a (once: pickled again by its memo in d) and the view
    assert len(packed.data) < 10_000  # 12 MiB of arrays travel as paths and offsets
    args, kwargs = pickle.loads(packed.data)  # what a worker does
    assert (args[0] == a).all() and (args[1] == a[::2]).all() and kwargs["d"]["name"] == "x"
    assert (kwargs["d"]["small"] == np.arange(10)).all()
    args[0][:] = -1  # a worker writing into its input: a private copy-on-write mapping
    again, _ = pickle.loads(packed.data)  # another worker's copy
    assert (again[0] == a).all() and (loaded["a"] == a).all()
    assert kwargs["d"]["a"] is args[0]  # one object twice in the step's inputs, as sent
    assert (loads(s.map_blob(digest))["a"] == a).all()
    # an array that is not in the store goes by value
    assert pack_args((np.ones(1_000_000),), {}).references == 0
    s.close()


def _strided_cases() -> list:
    base = np.arange(6 * 5 * 4, dtype=np.float64).reshape(6, 5, 4)
    return [
        np.asfortranarray(base),  # Fortran order
        base.transpose(2, 0, 1),  # a transpose
        base[:, ::2, 1:],  # a slice with steps
        np.arange(50, dtype=">i4")[::3],  # 1-d, strided, not native byte order
        (np.arange(40) % 3 == 0).reshape(8, 5).T,  # bool
        np.zeros((3, 0, 2), order="F"),  # no elements
        np.arange(12).astype("M8[s]").reshape(3, 4).T,  # datetime64
    ]


@pytest.mark.parametrize("small_pieces", [False, True])
def test_an_array_that_is_not_c_contiguous_is_stored_as_its_c_ordered_copy(monkeypatch,
                                                                            small_pieces):
    """Storing a Fortran-ordered array, a transpose or a strided slice makes exactly the blob
    (so the digest) of its C-ordered copy, a piece at a time: a part of the encoding is never
    a whole copy of the array. With tiny pieces, rows are cut along their axes too."""
    from zenbuild.serialize import Strided
    from zenbuild.serialize.buffers import encode_value

    if small_pieces:
        monkeypatch.setattr(Strided, "PIECE", 16)
    for a in _strided_cases():
        assert not a.flags.c_contiguous or a.size == 0
        enc, ref = encode_value(a), encode_value(np.ascontiguousarray(a))
        assert enc.tobytes() == ref.tobytes(), a
        assert enc.digest() == ref.digest() == value_digest(np.array(a, order="C"))
        assert enc.size == ref.size
        if a.size:
            strided = [p for p in enc.parts if type(p) is Strided]
            assert strided and strided[0].arr is a  # the array itself, not a copy of it
            pieces = list(strided[0].pieces())
            assert sum(p.nbytes for p in pieces) == a.nbytes
            if small_pieces:
                assert max(p.nbytes for p in pieces) <= max(16, a.itemsize * a.shape[-1])
        back = loads(enc.tobytes())
        assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)


def test_a_strided_array_is_written_to_a_file_blob_as_its_c_ordered_bytes(tmp_path):
    from zenbuild.serialize.buffers import encode_value
    from zenbuild.store.db import Store

    a = np.arange(300_000, dtype=np.float64).reshape(600, 500).T  # 2.4 MB: a file blob
    store = Store(str(tmp_path / "store"))
    try:
        digest = store.put_value(encode_value(a).parts)
        assert digest == value_digest(np.ascontiguousarray(a))
        assert np.array_equal(loads(store.map_blob(digest)), a)
    finally:
        store.close()


# ---- padding bytes are no part of a value -------------------------------------------------

ALIGNED = np.dtype([("flag", "i1"), ("price", "f8")], align=True)  # 7 padding bytes an item


def _with_garbage_padding(a: Any) -> Any:
    """A copy of ``a`` (same class, layout and values) whose padding bytes are random, as
    when the array's memory held something else before: only its padding differs from ``a``."""
    b = a.copy(order="K")
    items = b.view(np.ndarray).ravel(order="K").view(np.uint8).reshape(-1, a.dtype.itemsize)
    assert np.shares_memory(items, b)
    pad = ~np.array(_value_bytes(a.dtype))
    assert pad.any(), a.dtype
    items[:, pad] = np.frombuffer(os.urandom(items.shape[0] * int(pad.sum())),
                                  dtype=np.uint8).reshape(items.shape[0], -1)
    assert items.tobytes() != _memory(a)
    return b


def _value_bytes(dt: Any) -> list:
    """Which bytes of an item of ``dt`` hold its value (x86-64: the first 10 of a 16-byte
    np.longdouble), for the dtypes of these tests; the rest is padding."""
    if dt.fields is not None:
        out = [False] * dt.itemsize
        for fdt, off, *_ in dt.fields.values():
            for i, used in enumerate(_value_bytes(fdt)):
                out[off + i] = out[off + i] or used
        return out
    if dt.subdtype is not None:
        return _value_bytes(dt.subdtype[0]) * (dt.itemsize // dt.subdtype[0].itemsize)
    if dt.type in (np.longdouble, np.clongdouble):
        return ([True] * 10 + [False] * 6) * (dt.itemsize // 16)
    return [True] * dt.itemsize


def _memory(a: Any) -> bytes:
    """The bytes of ``a``'s memory (not ``tobytes()``: numpy copies a struct by its fields,
    and a copy's padding is whatever its new memory held)."""
    return a.view(np.ndarray).ravel(order="K").view(np.uint8).tobytes()


def _padded_cases() -> list:
    ld = np.arange(12, dtype=np.longdouble) * 1.5 + np.longdouble(1) / 3
    rec = np.array([(i % 2, i + 0.5) for i in range(12)], dtype=ALIGNED)
    nested = np.zeros(4, dtype=[("a", "i1"), ("b", np.longdouble, (2,)), ("c", ALIGNED)])
    nested["b"] = np.arange(8).reshape(4, 2) / 7
    nested["c"]["price"] = 2.5
    return [
        ld,  # the canonical encoding (tag a), C-contiguous
        ld.reshape(3, 4).T,  # a transpose: the Strided path
        ld.reshape(3, 4)[:, ::2],  # strided
        ld * 1j,  # clongdouble: two 80-bit values in 32 bytes
        rec,  # structured: the canonical pickle, buffer out of band
        np.asfortranarray(rec.reshape(3, 4)),
        rec.reshape(3, 4)[:, ::2],  # not contiguous: in band
        rec.view(np.recarray),  # a subclass
        nested,  # longdouble and an aligned struct inside fields
    ]


needs_x87 = pytest.mark.skipif(
    np.finfo(np.longdouble).nmant != 63 or np.dtype(np.longdouble).itemsize != 16,
    reason="np.longdouble has no padding here (not x86's 80-bit extended float)")


@needs_x87
@pytest.mark.parametrize("i", range(len(_padded_cases())))
def test_padding_bytes_are_not_part_of_an_array_value(i):
    """Two equal arrays whose padding bytes differ (an np.longdouble is 10 bytes of value in
    16; an aligned struct has gaps between its fields) get one digest, as a value alone, in
    a container and inside a pickled object, and come back equal, with their type."""
    a = _padded_cases()[i]
    b = _with_garbage_padding(a)
    assert value_digest(a) == value_digest(b)
    assert value_digest({"x": [a]}) == value_digest({"x": [b]})
    assert value_digest(types.SimpleNamespace(x=a)) == value_digest(types.SimpleNamespace(x=b))
    if a.dtype.names is None:
        assert canonical(a) == canonical(b)  # fingerprints (tag A) too
    for v in (a, b):
        back = loads(dumps(v))
        assert type(back) is type(a) and back.dtype == a.dtype and back.shape == a.shape
        assert _memory(back) == _memory(loads(dumps(a)))  # (padding zeroed: equal bytes)
        if a.dtype.names is None:
            assert np.array_equal(back, a)
        else:
            for name in a.dtype.names:
                assert np.array_equal(back[name], a[name])


@needs_x87
def test_padding_bytes_are_not_part_of_a_numpy_scalar_value():
    ld = np.longdouble(1) / 3
    scalars = [ld, np.clongdouble(ld + 2j), np.array([(1, 2.5)], dtype=ALIGNED)[0]]
    for s in scalars:
        other = _with_garbage_padding(np.array([s]))[0]
        assert value_digest(s) == value_digest(other)
        if s.dtype.names is None:
            assert canonical(s) == canonical(other)
        assert value_digest([s, types.SimpleNamespace()]) == \
            value_digest([other, types.SimpleNamespace()])
        back = loads(dumps(other))
        assert type(back) is type(s) and back.dtype == s.dtype
        assert dumps(back) == dumps(other) == dumps(s)
        assert back == s if s.dtype.names is None else back.item() == s.item()


PADDED_IN_CHILD = '''
import json, os
import numpy as np
from zenbuild.serialize import value_digest
# memory that held something else before, as a reused allocation does
raw = bytearray(os.urandom(16 * 8))
ld = np.frombuffer(raw, dtype=np.longdouble)
ld[:] = np.arange(8) * 1.5
rec = np.frombuffer(bytearray(os.urandom(16 * 8)),
                    dtype=np.dtype([("flag", "i1"), ("price", "f8")], align=True))
rec["flag"] = 1
rec["price"] = np.arange(8) / 4
print(json.dumps([value_digest(ld), value_digest({"r": rec}), value_digest(ld[3])]))
'''


@needs_x87
def test_padded_values_have_one_digest_in_every_process():
    def digests() -> list:
        out = subprocess.run([sys.executable, "-c", PADDED_IN_CHILD], capture_output=True,
                             text=True, cwd=str(REPO), check=True)
        return json.loads(out.stdout)

    assert digests() == digests()


def test_dtypes_without_padding_keep_their_memory_as_encoding():
    """Only dtypes with padding are treated: every other array is still its raw bytes (tag a
    in a value, tag A in a fingerprint), byte for byte as stored before."""
    from zenbuild.serialize import padding_mask

    for code in "?bhilqBHILQefdFDSUVMm":
        assert padding_mask(np.dtype(code)) is None, code
    assert padding_mask(np.dtype([("a", "i4"), ("b", "f4")])) is None  # packed
    a = np.arange(4, dtype=np.float64)
    assert canonical(a) == b"A5:<f8|4" + b"32:" + a.tobytes()
    assert dumps(a).endswith(b"32:" + a.tobytes())
