"""What an OpenAI-style provider accepts as a conversation history."""

from __future__ import annotations

from collections.abc import Sequence


def history_problems(messages: Sequence[tuple[str, str | None, str | None]]) -> list[str]:
    """Problems in (role, requested_call_id, tool_call_id) triples, oldest first.

    Every assistant tool call must be answered by exactly one tool message, right after it
    (before any other user or assistant message); a tool message must answer the call just
    before it. The very last message may be an unanswered call (the client is running it).
    """
    problems: list[str] = []
    waiting: str | None = None
    for index, (role, requested, answers) in enumerate(messages):
        if role == "tool":
            if waiting is None or answers != waiting:
                problems.append(f"#{index}: tool result {answers} answers no open call")
            waiting = None
            continue
        if waiting is not None:
            problems.append(f"#{index}: {role} message while call {waiting} is unanswered")
            waiting = None
        if role == "assistant" and requested:
            waiting = requested
    return problems
