"""What part of the history goes to the model."""

from __future__ import annotations

from collections.abc import Sequence

from agent_runtime.domain.model import Message, Role


def fit_context_window(history: Sequence[Message], max_messages: int) -> list[Message]:
    """The newest `max_messages` messages, never starting with a tool result cut off from its call.

    Oldest messages go first; a tool message at the front would answer a call the model
    cannot see, which OpenAI-style providers reject.
    """
    window = list(history[-max_messages:]) if max_messages > 0 else list(history)
    start = 0
    while start < len(window) and window[start].role is Role.TOOL:
        start += 1
    return window[start:]
