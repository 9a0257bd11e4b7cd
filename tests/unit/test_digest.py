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


class FakeClock:
    """The stat cache's "now" (ns), set by the test relative to a file's mtime."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _written(tmp_path, data: bytes = b"hello"):
    p = tmp_path / "f"
    p.write_bytes(data)
    return p, os.stat(p)


def test_racily_clean_entry_is_rehashed(tmp_path):
    """A digest recorded within the racy window of the file's mtime is not trusted: the next
    lookup hashes the file again, however little time really passed."""
    p, st = _written(tmp_path)
    clock = FakeClock(st.st_mtime_ns + RACY_NS // 2)
    cache = StatCache(clock=clock)
    cache.digest("f", str(p))
    cache.digest("f", str(p))
    assert cache.hashed_bytes == 10
    assert cache.lookup("f", stat_key(st)) is None


def test_entry_recorded_after_the_racy_window_is_trusted(tmp_path):
    """The other side of the rule: recorded more than RACY_NS after the mtime, the same stat
    is trusted and the file is not read again, however little time really passed."""
    p, st = _written(tmp_path)
    cache = StatCache(clock=FakeClock(st.st_mtime_ns + RACY_NS + 1))
    d1, _ = cache.digest("f", str(p))
    d2, _ = cache.digest("f", str(p))
    assert d1 == d2 and cache.hashed_bytes == 5
    assert cache.lookup("f", stat_key(st)) == d1


def test_same_stat_different_content_is_caught_when_racy(tmp_path):
    """git's racy case: the file is rewritten within its timestamp granularity, so its stat
    says nothing changed. The stat from before the rewrite is handed to the cache as the
    file's stat (what a coarse clock or filesystem would report); only the racy rule can
    catch it. With the rule disabled this test fails."""
    p, st = _written(tmp_path, b"aaaa")
    cache = StatCache(clock=FakeClock(st.st_mtime_ns + 1_000_000))  # recorded 1 ms after
    d1, _ = cache.digest("f", str(p), st)
    p.write_bytes(b"bbbb")  # same size
    d2, _ = cache.digest("f", str(p), st)  # the stat claims: unchanged
    assert (d1, d2) == (digest_bytes(b"aaaa"), digest_bytes(b"bbbb"))


def test_same_stat_is_trusted_once_outside_the_racy_window(tmp_path):
    """The contrast to the test above: the same unchanged-looking stat, recorded long after
    the mtime, is served from the cache without reading the file (the rule is what made
    the difference there, not the stat)."""
    p, st = _written(tmp_path, b"aaaa")
    cache = StatCache(clock=FakeClock(st.st_mtime_ns + 10 * RACY_NS))
    d1, _ = cache.digest("f", str(p), st)
    p.write_bytes(b"bbbb")
    assert cache.digest("f", str(p), st) == (d1, 4) and cache.hashed_bytes == 4


def test_whole_second_mtimes_get_the_coarse_window(tmp_path):
    """A whole-second mtime (FAT, HFS+, some network filesystems) may hide a rewrite for up
    to its granularity: 1 s after the mtime is still racy there, but not with ns mtimes."""
    p, _ = _written(tmp_path, b"aaaa")
    os.utime(p, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    st = os.stat(p)
    cache = StatCache(clock=FakeClock(st.st_mtime_ns + 10**9))
    cache.digest("f", str(p), st)
    assert cache.lookup("f", stat_key(st)) is None
    cache = StatCache(clock=FakeClock(st.st_mtime_ns + RACY_NS_COARSE + 1))
    cache.digest("f", str(p), st)
    assert cache.lookup("f", stat_key(st)) == digest_bytes(b"aaaa")


@pytest.mark.parametrize("how", ["digest_unrecorded", "record", "remember"])
def test_every_way_of_recording_uses_the_cache_clock(tmp_path, how):
    """Cold-run hashing, recording a just-written file and recording a just-read one all
    stamp the record with the injected clock, so the racy rule sees one notion of now."""
    p, st = _written(tmp_path)
    for offset, trusted_after in ((RACY_NS // 2, False), (RACY_NS + 1, True)):
        cache = StatCache(clock=FakeClock(st.st_mtime_ns + offset))
        if how == "digest_unrecorded":
            assert cache.digest_unrecorded("f", str(p))[0] == digest_bytes(b"hello")
        elif how == "record":
            cache.record("f", str(p), digest_bytes(b"hello"))
        else:
            cache.remember("f", stat_key(st), digest_bytes(b"hello"), cache.clock())
        assert cache.dirty["f"].recorded_ns == st.st_mtime_ns + offset
        assert (cache.lookup("f", stat_key(st)) is not None) is trusted_after


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
