"""LruDigests: at most its capacity of digests, the least recently used forgotten first."""

from __future__ import annotations

import pytest

from agent_runtime.application.lru_digests import LruDigests


def test_at_most_capacity_digests_are_kept_and_the_least_recently_used_goes_first() -> None:
    kept = LruDigests(3)
    for digest in (b"a", b"b", b"c"):
        kept.remember(digest)
    assert kept.remembers(b"a")  # now the most recently used: b is the least
    kept.remember(b"d")

    assert len(kept) == 3
    assert not kept.remembers(b"b")
    assert [kept.remembers(d) for d in (b"a", b"c", b"d")] == [True, True, True]


def test_remembering_a_digest_again_keeps_one_of_it() -> None:
    kept = LruDigests(2)
    for digest in (b"a", b"a", b"a", b"b"):
        kept.remember(digest)
    assert len(kept) == 2
    kept.remember(b"a")  # the most recent again: b goes next
    kept.remember(b"c")
    assert (kept.remembers(b"a"), kept.remembers(b"b"), kept.remembers(b"c")) == (True, False, True)


def test_many_digests_never_take_more_than_the_capacity() -> None:
    kept = LruDigests(100)
    for number in range(10_000):
        kept.remember(number.to_bytes(4, "big"))
        assert len(kept) <= 100
    remembered = [n for n in range(10_000) if kept.remembers(n.to_bytes(4, "big"))]
    assert remembered == list(range(9_900, 10_000))


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LruDigests(0)
