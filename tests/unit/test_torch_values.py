"""A torch tensor loaded from the store is the mapped blob, not a copy (tester round r5: a
consumer of a cached 256 MiB tensor peaked at twice its size), and stays isolated: a step
writing into it changes only its own pages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import stored

from zenbuild.serialize import loads

torch = pytest.importorskip("torch")


def test_a_loaded_tensor_is_the_mapped_blob_and_writes_stay_private(tmp_path: Path) -> None:
    t = torch.arange(1_000_000, dtype=torch.float32).reshape(1000, 1000)
    store, digest = stored(tmp_path, t)
    try:
        mapped = store.map_blob(digest)
        back = loads(mapped)
        assert torch.equal(back, t)
        area = np.frombuffer(mapped, dtype=np.uint8)
        start = area.ctypes.data
        assert start <= back.data_ptr() < start + area.nbytes  # in the mapping: no copy
        back.add_(1)  # a consumer writing into its input
        again = loads(store.map_blob(digest))
        assert torch.equal(again, t)  # the store and a sibling's copy are unchanged
    finally:
        store.close()
