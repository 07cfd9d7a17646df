"""Opening: how an input starts its turn."""

from __future__ import annotations

from dataclasses import dataclass

from agent_runtime.domain import chunks
from agent_runtime.domain.model import StopReason


@dataclass(frozen=True, slots=True)
class Opening:
    """How an input starts its turn: chunks to send after TurnStarted, then a model call or not."""

    input_message_id: str = ""
    chunks: tuple[chunks.ChunkBody, ...] = ()
    run_model: bool = True
    # When no model call follows, the turn ends with this.
    stop_reason: StopReason = StopReason.END_TURN
