"""LruDigests: a bounded set of digests that forgets the least recently used first."""

from __future__ import annotations

from collections import OrderedDict


class LruDigests:
    """At most `capacity` digests; adding one more forgets the one least recently added or
    found. Only digests are kept, never what they digest."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def remembers(self, digest: bytes) -> bool:
        """Whether `digest` is kept; if it is, it is now the most recently used."""
        if digest not in self._digests:
            return False
        self._digests.move_to_end(digest)
        return True

    def remember(self, digest: bytes) -> None:
        self._digests[digest] = None
        self._digests.move_to_end(digest)
        if len(self._digests) > self._capacity:
            self._digests.popitem(last=False)

    def __len__(self) -> int:
        return len(self._digests)
