"""The limits and defaults every turn runs with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class TurnSettings:
    default_model: str
    # Messages sent to the model at most (oldest dropped first); bounds per-turn cost.
    context_window_messages: int = 200
    # Tokens (estimated) of history, system prompt and tools sent to the model at most,
    # unless the agent sets its own; and the share of it one tool result may take before it
    # is cut in the middle.
    context_window_tokens: int = 100_000
    context_max_tool_result_share: float = 0.25
    max_message_bytes: int = 256 * 1024
    # Model calls one turn may make (tool-error retries, reject-then-continue, switch_mode).
    max_iterations: int = 8
    approval_ttl: timedelta = timedelta(minutes=10)
    # The longest a turn may run; None: no limit beyond the model client's own timeouts.
    turn_timeout: float | None = 900.0
    # Who runs the turns of this process, and how long a turn's claim lasts unrenewed.
    owner: str = "local"
    lease: timedelta = timedelta(seconds=30)
