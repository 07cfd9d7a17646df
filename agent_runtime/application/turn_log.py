"""TurnLog: a turn's chunks as its client sees them. Every chunk gets the next seq; every one
but the deltas goes into the replay log (persisted with the turn, what a replay serves), and
is handed out to send only once its commit has landed."""

from __future__ import annotations

from agent_runtime.domain import chunks


class TurnLog:
    def __init__(self, session_id: str, turn_id: str) -> None:
        self._session_id = session_id
        self._turn_id = turn_id
        self.chunks: list[chunks.Chunk] = []  # the replay log
        self._handed_out = 0  # how many of them to_send() has given out
        self._next_seq = 1
        self._last_delta_seq = 0

    def add(self, body: chunks.ChunkBody) -> chunks.Chunk:
        """A new chunk with the next seq: a delta goes out at once, any other into the log."""
        chunk = chunks.Chunk(self._session_id, self._turn_id, self._next_seq, body)
        self._next_seq += 1
        if isinstance(body, chunks.DELTAS):
            self._last_delta_seq = chunk.seq
        else:
            self.chunks.append(chunk)
        return chunk

    def to_send(self) -> list[chunks.Chunk]:
        """The logged chunks not handed out yet."""
        out = self.chunks[self._handed_out :]
        self._handed_out = len(self.chunks)
        return out

    def truncate(self, length: int) -> None:
        """Forget the chunks past `length` (their commit was rolled back). Their seqs are
        given again, but never a delta's: the client saw every delta already."""
        del self.chunks[length:]
        # A kept chunk the client never got (it went away as its commit landed) is still to
        # be handed out, to the followers at least.
        self._handed_out = min(self._handed_out, len(self.chunks))
        last_logged = self.chunks[-1].seq if self.chunks else 0
        self._next_seq = max(self._last_delta_seq, last_logged) + 1
