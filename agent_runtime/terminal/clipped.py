"""Long text kept within a bound, also while it is still coming in: its head and its tail,
and how many characters were cut between them."""

from __future__ import annotations

MAX_RESULT_CHARS = 20_000
# Room for "\n[... N characters cut ...]\n" (any N below 10**20) within the limit.
NOTICE_ROOM = 48


class Clipped:
    """Collects text piece by piece in memory bounded by `limit` (a command printing for
    ever, a huge file); text() is at most `limit` characters, the cut notice included."""

    def __init__(self, limit: int = MAX_RESULT_CHARS) -> None:
        self._limit = limit
        self._kept = max(limit - NOTICE_ROOM, 0) // 2  # of the head, and of the tail, once cut
        self._head = ""
        self._tail: list[str] = []
        self._tail_chars = 0
        self._total = 0

    def add(self, text: str) -> None:
        self._total += len(text)
        if len(self._head) < self._kept:
            room = self._kept - len(self._head)
            self._head += text[:room]
            text = text[room:]
        if text:
            self._tail.append(text)
            self._tail_chars += len(text)
            if self._tail_chars > 2 * self._limit:  # now and then, so adding stays linear
                self._tail = ["".join(self._tail)[-(self._limit - self._kept) :]]
                self._tail_chars = len(self._tail[0])

    def text(self) -> str:
        rest = "".join(self._tail)
        if self._total <= self._limit:
            return self._head + rest
        cut = self._total - 2 * self._kept
        tail = rest[len(rest) - self._kept :]
        return f"{self._head}\n[... {cut} characters cut ...]\n{tail}"


def truncated(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """At most `limit` characters: the head and the tail, saying how much was cut."""
    clipped = Clipped(limit)
    clipped.add(text)
    return clipped.text()
