"""What one running turn knows, and the bookkeeping its commits need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_runtime.domain import chunks
from agent_runtime.domain.agents import AgentProfile
from agent_runtime.domain.model import Message, Session, StopReason, Turn, Usage


@dataclass(frozen=True, slots=True)
class Opening:
    """How an input starts its turn: chunks to send after TurnStarted, then a model call or not."""

    input_message_id: str = ""
    chunks: tuple[chunks.ChunkBody, ...] = ()
    run_model: bool = True
    # When no model call follows, the turn ends with this.
    stop_reason: StopReason = StopReason.END_TURN


@dataclass(slots=True)
class TurnState:
    session: Session
    turn: Turn
    agent: AgentProfile
    history: list[Message]
    # The model the request asked for ("" = the agent's or the runtime's default).
    model_override: str = ""
    # The tenant the session belongs to: units of work opened later in the turn need it.
    tenant_id: str = field(kw_only=True)
    usage: Usage = field(default_factory=Usage)
    # Text streamed by the model call in flight (kept as an incomplete message on cancel).
    partial_text: list[str] = field(default_factory=list)
    # time.monotonic() when the model call in flight started; None when none is.
    model_call_started: float | None = None
    # The last model call's completion, until a commit has recorded it.
    model_outcome: dict[str, Any] | None = None
    # Every chunk but the deltas, with its seq: what a replay of the turn serves.
    log: list[chunks.Chunk] = field(default_factory=list)
    finished: bool = False
    _next_seq: int = 1
    _sent_seq: int = 0
    _committed_count: int = 0
    _committed_history: int = 0
    _committed_log: int = 0
    _written_log: int = 0

    def __post_init__(self) -> None:
        self.committed(release=False)

    def chunk(self, body: chunks.ChunkBody) -> chunks.Chunk:
        """A new chunk with the next seq; all but deltas also go into the replay log."""
        chunk = chunks.Chunk(self.session.session_id, self.turn.turn_id, self._next_seq, body)
        self._next_seq += 1
        if not isinstance(body, chunks.AssistantDelta):
            self.log.append(chunk)
        return chunk

    def sent(self, chunk: chunks.Chunk) -> None:
        self._sent_seq = max(self._sent_seq, chunk.seq)

    @property
    def log_changed(self) -> bool:
        """The replay log has chunks not yet written in this transaction."""
        return len(self.log) != self._written_log

    def log_written(self) -> None:
        self._written_log = len(self.log)

    def next_position(self) -> int:
        return self.session.next_position()

    def committed(self, *, release: bool) -> None:
        """Everything so far is committed (and, with release, the turn is over)."""
        self._committed_count = self.session.message_count
        self._committed_history = len(self.history)
        self._committed_log = len(self.log)
        self._written_log = len(self.log)
        self.model_outcome = None
        if release:
            self.finished = True

    def restore(self) -> None:
        """Forget what the rolled-back transaction had appended."""
        self.session.message_count = self._committed_count
        del self.history[self._committed_history :]
        del self.log[self._committed_log :]
        self._written_log = self._committed_log
        last_logged = self.log[-1].seq if self.log else 0
        self._next_seq = max(self._sent_seq, last_logged) + 1
