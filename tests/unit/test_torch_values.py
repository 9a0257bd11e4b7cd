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


def test_a_stored_tensor_goes_to_a_worker_by_reference(tmp_path: Path) -> None:
    # under -j it was pickled by value: a 256 MiB tensor peaked at 1.2 GiB
    import pickle

    from zenbuild.executors.worker_store import pack_args

    t = torch.arange(1 << 19, dtype=torch.float64).reshape(512, 1024)  # 4 MiB
    store, digest = stored(tmp_path, {"t": t, "small": torch.ones(3)})
    try:
        loaded = loads(store.map_blob(digest))
        packed = pack_args((loaded["t"],), {"d": loaded, "grad": t.clone().requires_grad_()})
        assert packed.references == 1  # the loaded one; a fresh tensor goes by value
        assert len(packed.data) < (1 << 23)  # the loaded 4 MiB travels as path and offset
        args, kwargs = pickle.loads(packed.data)  # what a worker does
        assert torch.equal(args[0], t) and args[0].shape == (512, 1024)
        assert torch.equal(kwargs["d"]["small"], torch.ones(3))
        assert kwargs["d"]["t"] is args[0] and kwargs["grad"].requires_grad
        args[0].add_(1)  # a worker writing into its input: its own copy-on-write pages
        again, _ = pickle.loads(packed.data)
        assert torch.equal(again[0], t) and torch.equal(loaded["t"], t)
        assert pack_args((t,), {}).references == 0  # not in the store: by value
    finally:
        store.close()
