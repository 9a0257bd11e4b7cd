"""numpy masked arrays are stored as their data and mask arrays out of band: a load maps them
(numpy's own pickle holds both as bytes copies, and a consumer of a cached 144 MiB masked
array peaked at 467 MiB: tester round r5), with mask, fill value and hard mask kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import stored

from zenbuild.serialize import loads, value_digest
from zenbuild.serialize.buffers import encode_value

CASES = [
    np.ma.masked_array(np.arange(10.0), mask=[0, 1] * 5, fill_value=-1.5),
    np.ma.masked_array(np.arange(6).reshape(2, 3)),  # no mask at all (nomask)
    np.ma.masked_array(np.arange(6).reshape(2, 3), mask=True, hard_mask=True),
    np.ma.masked_array(np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
                       mask=[(True, False)]),
    np.ma.masked_array(np.arange(10.0)[::2], mask=[0, 1, 0, 1, 0]),  # not contiguous
    np.ma.masked_array(np.array(["a", "b"]), mask=[1, 0]),
    np.ma.masked_array(np.arange(12, dtype=">i4").reshape(3, 4).T, mask=np.eye(4, 3)),
    np.ma.array(5.0, mask=False),  # 0-d: came back with shape (1,)
    np.ma.array(5.0, mask=True),
    np.ma.masked_array(np.zeros((0, 3)), mask=np.zeros((0, 3), bool)),  # empty
]


@pytest.mark.parametrize("a", CASES)
def test_a_masked_array_comes_back_the_same(a):
    b = loads(encode_value(a).tobytes())
    assert type(b) is np.ma.MaskedArray and b.dtype == a.dtype and b.shape == a.shape
    assert (b.mask is np.ma.nomask) == (a.mask is np.ma.nomask)
    assert np.array_equal(np.ma.getmaskarray(b), np.ma.getmaskarray(a))
    assert np.array_equal(b.filled(), a.filled()) and b.fill_value == a.fill_value
    assert b.hardmask == a.hardmask
    assert value_digest(b) == value_digest(a) == value_digest(a.copy())


def test_another_mask_or_fill_value_is_another_digest():
    a = np.ma.masked_array(np.arange(10.0), mask=[0, 1] * 5, fill_value=-1.5)
    other_mask = a.copy()
    other_mask.mask = np.ma.getmaskarray(a)[::-1]
    other_fill = np.ma.masked_array(np.arange(10.0), mask=[0, 1] * 5, fill_value=7.0)
    assert len({value_digest(a), value_digest(other_mask), value_digest(other_fill)}) == 3


def test_a_loaded_masked_array_maps_the_blob_and_writes_stay_private(tmp_path: Path) -> None:
    a = np.ma.masked_array(np.arange(1_000_000, dtype=np.float64),
                           mask=np.arange(1_000_000) % 3 == 0)
    store, digest = stored(tmp_path, a)
    try:
        mapped = store.map_blob(digest)
        b = loads(mapped)
        area = np.frombuffer(mapped, dtype=np.uint8)
        assert np.shares_memory(b.data, area) and np.shares_memory(b.mask, area)  # no copy
        b[1] = -5.0  # a consumer writing into its input
        again = loads(store.map_blob(digest))
        assert again[1] == 1.0 and np.array_equal(again.filled(0), a.filled(0))
    finally:
        store.close()
