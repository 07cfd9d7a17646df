"""The limits every turn runs with, and who owns the turns of this process.

A plain pydantic model: config.py reads it from AGENT_RUNTIME_<FIELD> (e.g.
AGENT_RUNTIME_MAX_ITERATIONS), so a field's name is its variable's name.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

# The owner name of a process left unnamed: fine alone, wrong for replicas sharing a database.
DEFAULT_INSTANCE_ID = "local"


class TurnSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Messages sent to the model at most (oldest dropped first); bounds per-turn cost.
    context_window_messages: PositiveInt = 200
    # Tokens (estimated) of history, system prompt and tools sent to the model at most,
    # unless the agent sets its own; and the share of it one tool result may take before it
    # is cut in the middle.
    context_window_tokens: PositiveInt = 100_000
    context_max_tool_result_share: float = Field(default=0.25, gt=0, le=1)
    # One user message (UTF-8 bytes).
    max_message_bytes: PositiveInt = 256 * 1024
    # Model calls one turn may make (tool-error retries, reject-then-continue, switch_mode).
    max_iterations: PositiveInt = 8
    # How long a pending approval waits; older ones behave as rejected.
    approval_ttl_seconds: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    # The longest a turn may run; None: no limit beyond the model client's own timeouts.
    turn_timeout_seconds: float | None = Field(default=900.0, gt=0)
    # Names this process as the owner of its turns; each replica on one database needs its
    # own. A restarted process reclaims at once the turns its earlier life left running.
    instance_id: str = Field(default=DEFAULT_INSTANCE_ID, min_length=1)
    # A running turn's claim lasts this long unrenewed (renewed every third of it).
    lease_seconds: float = Field(default=30.0, gt=0, allow_inf_nan=False)

    @property
    def approval_ttl(self) -> timedelta:
        return timedelta(seconds=self.approval_ttl_seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)
