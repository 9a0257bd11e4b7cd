"""polars values (serialize.materialize): a DataFrame or Series is stored as the pyarrow Table
of its columns, buffers out of band; it comes back equal (strings, nulls, categoricals, enums,
dates, time zones, decimals, nested types), its numeric columns in the mapped blob, with the
same digest in every process and whatever its chunks; dtypes Arrow does not bring back keep
polars' own pickle; and zenbuild imports polars only for a polars value."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import REPO, stored
from zenbuild.serialize import OOB_MAGIC, loads, value_digest
from zenbuild.serialize.buffers import encode_value, payload_spans
from zenbuild.serialize.materialize import polars_frame_from_arrow, polars_series_from_arrow

FRAME = '''
import datetime as dt, decimal
import numpy as np, polars as pl

rng = np.random.default_rng(7)
n = 50_000
df = pl.DataFrame({
    "f": rng.random(n),
    "i": pl.Series(rng.integers(-1000, 1000, n)).set(pl.Series(rng.random(n) < 0.1), None),
    "s": [None if i % 17 == 0 else f"key{i % 1000}" for i in range(n)],
    "c": pl.Series([f"c{i % 50}" for i in range(n)], dtype=pl.Categorical),
    "e": pl.Series(["lo", "hi", None][i % 3] for i in range(n)).cast(pl.Enum(["lo", "hi"])),
    "d": pl.date_range(dt.date(2000, 1, 1), dt.date(2000, 1, 1) + dt.timedelta(n - 1),
                       eager=True),
    "t": pl.Series([dt.datetime(2024, 3, 5, 10)] * n).dt.replace_time_zone("Europe/Paris"),
    "m": pl.Series([decimal.Decimal(i) / 100 for i in range(n)], dtype=pl.Decimal(12, 2)),
    "l": [[i, i + 1] if i % 5 else None for i in range(n)],
    "st": [{"a": i, "b": "x"} for i in range(n)],
})
'''


def _frame() -> pl.DataFrame:
    ns: dict = {}
    exec(FRAME, ns)
    return ns["df"]


def _same(a: object, b: object) -> bool:
    if isinstance(a, pl.DataFrame):
        assert isinstance(b, pl.DataFrame)
        return a.schema == b.schema and a.equals(b, null_equal=True)
    assert isinstance(a, pl.Series) and isinstance(b, pl.Series)
    return a.name == b.name and a.dtype == b.dtype and a.equals(b, null_equal=True)


def test_a_frame_of_every_common_dtype_comes_back_equal_through_the_store(tmp_path: Path) -> None:
    df = _frame()
    store, digest = stored(tmp_path, df)
    try:
        back = loads(store.map_blob(digest))
    finally:
        store.close()
    assert type(back) is pl.DataFrame
    assert back.schema == df.schema  # Enum categories, time zone, decimal scale kept
    assert _same(back, df)
    assert back["s"].null_count() == df["s"].null_count() > 0
    assert list(back.schema["e"].categories) == ["lo", "hi"]


def test_a_frame_is_stored_as_arrow_buffers_out_of_band() -> None:
    df = pl.DataFrame({"a": np.arange(100_000, dtype=np.int64), "s": ["x"] * 100_000})
    enc = encode_value(df)
    data = enc.tobytes()
    assert data[:4] == OOB_MAGIC
    spans = payload_spans(data)
    # the int64 column's 800,000 bytes are one buffer of their own, not inside a pickle
    assert 800_000 in [b - a for a, b in spans]
    assert any(isinstance(p, memoryview) and p.nbytes == 800_000 for p in enc.parts)
    assert b"polars_frame_from_arrow" in data[:4096]


def test_a_loaded_numeric_column_is_the_mapped_blob_not_a_copy(tmp_path: Path) -> None:
    df = pl.DataFrame({"a": np.arange(1_000_000, dtype=np.float64), "s": ["x"] * 1_000_000})
    store, digest = stored(tmp_path, df)
    try:
        mapped = store.map_blob(digest)
        back = loads(mapped)
        col = back["a"].to_numpy()  # zero copy: a view of polars' buffer
        assert np.shares_memory(col, np.frombuffer(mapped, dtype=np.uint8))
        del mapped
        assert back.equals(df)  # the mapping lives as long as the frame needs it
    finally:
        store.close()


def test_a_series_comes_back_with_its_name_and_dtype() -> None:
    for s in (pl.Series("nm", ["b", None, "a"], dtype=pl.Enum(["b", "a"])),
              pl.Series("", [1.5, None, float("nan")], dtype=pl.Float32),
              pl.Series("when", [dt.date(2020, 1, 1), None])):
        back = loads(encode_value(s).tobytes())
        assert type(back) is pl.Series
        assert _same(back, s), (s, back)
        assert encode_value(s).tobytes()[:4] == OOB_MAGIC


def test_nested_categoricals_and_enums_keep_their_dtypes() -> None:
    df = pl.DataFrame({
        "lc": pl.Series([["a"], ["b", None], None], dtype=pl.List(pl.Categorical)),
        "se": pl.Series([{"e": "x"}, None, {"e": "y"}], dtype=pl.Struct({"e": pl.Enum(["y", "x"])})),
        "ar": pl.Series([[1, 2], None, [3, 4]], dtype=pl.Array(pl.Int32, 2)),
    })
    back = loads(encode_value(df).tobytes())
    assert back.schema == df.schema and _same(back, df)


def _digest_in_child(seed: str, before: str = "") -> str:
    code = before + FRAME + "from zenbuild.serialize import value_digest\nprint(value_digest(df))\n"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env, cwd=str(REPO)).stdout.strip()


def test_the_same_frame_has_the_same_digest_in_two_processes() -> None:
    here = value_digest(_frame())
    # the second process made other categories first: polars numbers categories per process
    other = "import polars\npolars.Series(['c7', 'zz', 'c3'], dtype=polars.Categorical)\n"
    assert _digest_in_child("1") == _digest_in_child("2", other) == here


def test_a_chunked_frame_digests_like_the_same_frame_in_one_chunk() -> None:
    a = pl.DataFrame({"a": [1, 2], "s": ["x", "y"], "c": pl.Series(["u", "v"], dtype=pl.Categorical)})
    b = pl.DataFrame({"a": [3], "s": ["z"], "c": pl.Series(["u"], dtype=pl.Categorical)})
    chunked = pl.concat([a, b], rechunk=False)
    assert max(chunked.n_chunks("all")) == 2
    assert value_digest(chunked) == value_digest(chunked.rechunk())
    assert value_digest(chunked["s"]) == value_digest(chunked["s"].rechunk())
    back = loads(encode_value(chunked).tobytes())
    assert _same(back, chunked)
    assert chunked.n_chunks("all") == [2, 2, 2]  # storing did not change the step's own value


def test_frames_that_differ_never_share_a_digest() -> None:
    base = pl.DataFrame({"k": ["a", "b"], "v": [1, 2]})
    variants = [
        base,
        base.with_columns(pl.col("k").cast(pl.Categorical)),
        base.with_columns(pl.col("k").cast(pl.Enum(["a", "b"]))),
        base.with_columns(pl.col("k").cast(pl.Enum(["b", "a"]))),
        base.with_columns(pl.col("v").cast(pl.Int32)),
        base.with_columns(pl.col("v").cast(pl.Decimal(10, 2))),
        base.rename({"v": "w"}),
        base.with_columns(v=pl.Series([1, None])),
        base.with_columns(v=pl.Series([1, 3])),
        pl.DataFrame({"k": ["a", "b"], "v": [dt.datetime(2020, 1, 1)] * 2}),
        pl.DataFrame({"k": ["a", "b"], "v": [dt.datetime(2020, 1, 1)] * 2}).with_columns(
            pl.col("v").dt.replace_time_zone("UTC")),
        base["k"], base["v"], base.select("k"),
    ]
    digests = [value_digest(v) for v in variants]
    assert len(set(digests)) == len(variants)


def test_dtypes_arrow_does_not_bring_back_keep_polars_own_pickle() -> None:
    wide = pl.DataFrame({"big": pl.Series([1, None, 3], dtype=pl.Int128)})
    height_only = pl.DataFrame({"a": [1, 2, 3]}).drop("a").with_row_index().drop("index")
    assert height_only.shape == (3, 0)
    for df in (wide, height_only):
        data = encode_value(df).tobytes()
        assert b"polars_frame_from_arrow" not in data
        back = loads(data)
        assert back.shape == df.shape and back.schema == df.schema and back.equals(df)
    assert value_digest(wide) == value_digest(wide.clone())


def test_a_subclass_keeps_its_class() -> None:
    back = loads(encode_value(Sub({"a": [1, 2]})).tobytes())
    assert type(back) is Sub and back.equals(pl.DataFrame({"a": [1, 2]}))


class Sub(pl.DataFrame):
    pass


def test_the_loaders_are_stable_names() -> None:
    import pyarrow as pa

    t = pa.table({"a": [1, 2]})
    assert polars_frame_from_arrow(t).equals(pl.DataFrame({"a": [1, 2]}))
    back = polars_series_from_arrow(t, "")
    assert back.name == "" and back.equals(pl.Series("", [1, 2]))


@pytest.mark.parametrize("value", ["{'a': 1}", "[1.5, 'x']"])
def test_zenbuild_imports_polars_only_for_a_polars_value(value: str) -> None:
    code = ("import sys\nfrom zenbuild.serialize import value_digest\n"
            f"value_digest({value}); import fractions; value_digest(fractions.Fraction(1, 3))\n"
            "assert 'polars' not in sys.modules, 'polars imported'\n"
            "import polars as pl\n"
            "from zenbuild.serialize import loads\n"
            "from zenbuild.serialize.buffers import encode_value\n"
            "data = encode_value(pl.DataFrame({'a': [1]})).tobytes()\n"
            "assert b'polars_frame_from_arrow' in data and loads(data)['a'][0] == 1\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))


def test_a_chunked_frame_is_rechunked_once_for_both_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    from zenbuild.serialize import materialize

    calls = []
    real = pl.DataFrame.rechunk

    def counting(self: pl.DataFrame) -> pl.DataFrame:
        calls.append(self.shape)
        return real(self)

    monkeypatch.setattr(pl.DataFrame, "rechunk", counting)
    part = pl.DataFrame({"a": np.arange(1000), "s": [f"v{i}" for i in range(1000)],
                         "c": pl.Series(["x", "y"] * 500, dtype=pl.Categorical)})
    chunked = pl.concat([part] * 3, rechunk=False)
    digest = value_digest(chunked)
    # the stability check pickled it twice: the second pickle took the first one's Table
    assert calls == [(3000, 3)]
    assert materialize._last_table == []  # and holds no copy after
    assert digest == value_digest(real(chunked))


def test_a_frame_changed_in_place_after_a_lone_pickle_digests_its_new_content() -> None:
    from zenbuild.serialize.pickler import canonical_pickle

    chunked = pl.concat([pl.DataFrame({"a": [1, 2]}), pl.DataFrame({"a": [3]})], rechunk=False)
    canonical_pickle(chunked)  # one pickle alone: its Table stays for a second one
    chunked.vstack(pl.DataFrame({"a": [4]}), in_place=True)
    assert chunked.n_chunks("all") == [3]
    assert value_digest(chunked) == value_digest(pl.DataFrame({"a": [1, 2, 3, 4]}))
    # the same shape, one value written in place
    canonical_pickle(chunked)
    chunked[1, "a"] = 20
    assert value_digest(chunked) == value_digest(pl.DataFrame({"a": [1, 20, 3, 4]}))
    assert loads(encode_value(chunked).tobytes())["a"].to_list() == [1, 20, 3, 4]
    # renamed in place: the same buffers
    canonical_pickle(chunked)
    chunked.columns = ["b"]
    assert value_digest(chunked) == value_digest(pl.DataFrame({"b": [1, 20, 3, 4]}))
