"""digest: file digests and the stat cache's racy-clean rule."""

from __future__ import annotations

import os
import time

import pytest

from zenbuild.digest import (
    RACY_NS,
    RACY_NS_COARSE,
    FileRecord,
    StatCache,
    digest_bytes,
    digest_file,
    digest_file_stat,
    stat_key,
)


def test_digest_file_matches_bytes(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert digest_file(str(p)) == (digest_bytes(data), len(data))


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 131072, 131073, (1 << 20) + 65536])
def test_digest_file_around_the_read_sizes(tmp_path, size):
    """Small files are hashed from the first read, bigger ones in chunks: the same digest."""
    p = tmp_path / "f"
    data = os.urandom(size)
    p.write_bytes(data)
    assert digest_file(str(p)) == (digest_bytes(data), size)
    d, n, st = digest_file_stat(str(p))
    assert (d, n, st.st_size) == (digest_bytes(data), size, size)


def test_stat_cache_skips_rehash_when_clean(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    old = time.time() - 10
    os.utime(p, (old, old))
    cache = StatCache()
    d1, _ = cache.digest("f", str(p))
    assert cache.hashed_bytes == 5
    d2, _ = cache.digest("f", str(p))
    assert d1 == d2 and cache.hashed_bytes == 5  # trusted: not rehashed


def test_racily_clean_entry_is_rehashed(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    cache = StatCache()
    cache.digest("f", str(p))  # mtime is "now": racily clean
    cache.digest("f", str(p))
    assert cache.hashed_bytes == 10


def test_same_stat_different_content_is_caught_when_racy(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"aaaa")
    st = os.stat(p)
    cache = StatCache()
    d1, _ = cache.digest("f", str(p))
    p.write_bytes(b"bbbb")  # same size, maybe the same mtime tick
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    d2, _ = cache.digest("f", str(p))
    assert d1 != d2


def test_record_trust_rule():
    rec = FileRecord((1, 1_000, 2, 1_000), "d", recorded_ns=1_000 + RACY_NS + 1)
    assert rec.trusted_for((1, 1_000, 2, 1_000))
    assert not rec.trusted_for((1, 1_001, 2, 1_000))
    assert not rec.trusted_for((1, 1_000, 2, 1_001))  # ctime moved: chmod, utime, rewrite
    racy = FileRecord((1, 1_000, 2, 1_000), "d", recorded_ns=1_000 + RACY_NS)
    assert not racy.trusted_for((1, 1_000, 2, 1_000))
    # whole-second (or whole-millisecond) mtimes: a coarse filesystem, a wider window
    coarse = (1, 5_000_000_000, 2, 5_000_000_000)
    assert not FileRecord(coarse, "d", 5_000_000_000 + RACY_NS + 1).trusted_for(coarse)
    assert FileRecord(coarse, "d", 5_000_000_000 + RACY_NS_COARSE + 1).trusted_for(coarse)


def test_stat_key_fields(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"xy")
    st = os.stat(p)
    assert stat_key(st) == (2, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
