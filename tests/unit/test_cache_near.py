"""The near cache's line store: states, LRU by bytes, pinned M lines, TTL."""

from __future__ import annotations

import pytest

from distsync.cache.near import LINE_OVERHEAD, E, I, M, NearCache, S


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def size(key: str, value: bytes) -> int:
    return len(key) + len(value) + LINE_OVERHEAD


def test_put_get_states_and_counts() -> None:
    nc = NearCache(1 << 20)
    nc.put("a", b"1", 1, E, "n1")
    nc.put("b", b"2", 1, S, "n1")
    assert nc.state("a") == E and nc.state("b") == S and nc.state("zz") == I
    assert nc.counts == {M: 0, E: 1, S: 1}
    nc.set_state(nc.peek("a"), S)
    assert nc.counts == {M: 0, E: 0, S: 2}
    nc.set_state(nc.peek("a"), I)
    assert "a" not in nc and nc.counts[S] == 1
    assert nc.bytes == size("b", b"2")
    with pytest.raises(ValueError):
        nc.put("c", b"", 1, I, "n1")


def test_lru_by_bytes_evicts_least_recently_used_clean_lines() -> None:
    evicted = []
    per = size("k0", b"x" * 100)
    nc = NearCache(per * 3, on_evict=lambda ln: evicted.append(ln.key))
    for i in range(3):
        nc.put(f"k{i}", b"x" * 100, 1, S, "n1")
    nc.get("k0")  # k0 becomes most recently used; k1 is now the oldest
    nc.put("k3", b"x" * 100, 1, E, "n1")
    assert evicted == ["k1"]
    assert nc.bytes <= nc.max_bytes and len(nc) == 3
    assert nc.put("huge", b"x" * (per * 4), 1, S, "n1") is None  # larger than the cache


def test_modified_lines_are_pinned_until_clean() -> None:
    evicted = []
    per = size("k0", b"x" * 100)
    nc = NearCache(per * 2, on_evict=lambda ln: evicted.append(ln.key))
    nc.put("k0", b"x" * 100, 1, M, "n1")  # a write in flight: not yet in the backend
    nc.put("k1", b"x" * 100, 1, S, "n1")
    nc.put("k2", b"x" * 100, 1, S, "n1")
    assert "k0" in nc and evicted == ["k1"]
    nc.put("k3", b"x" * 100, 1, S, "n1")
    assert "k0" in nc and evicted == ["k1", "k2"]
    nc.set_state(nc.peek("k0"), E)  # written back: now it may go
    nc.put("k4", b"x" * 100, 1, S, "n1")
    assert "k0" not in nc and evicted[-1] == "k0"


def test_ttl_expiry_drops_the_line() -> None:
    clock = Clock()
    nc = NearCache(1 << 20, clock=clock)
    nc.put("t", b"v", 1, S, "n1", ttl_ms=500)
    nc.put("forever", b"v", 1, S, "n1")
    assert nc.get("t") is not None
    assert nc.peek("t").ttl_ms(clock.t) == 500
    clock.t += 0.499
    assert nc.get("t") is not None
    clock.t += 0.002
    assert nc.state("t") == I
    assert nc.get("t") is None and "t" not in nc
    nc.put("t2", b"v", 1, S, "n1", ttl_ms=10)
    clock.t += 1
    assert nc.sweep() == 1 and list(ln.key for ln in nc) == ["forever"]
