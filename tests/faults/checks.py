"""What the fault tests check after a fault: the stored history and the database rows."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import session_pb2_grpc
from tests.support.history import history_problems

ROLE_NAMES = {
    ses.ROLE_SYSTEM: "system",
    ses.ROLE_USER: "user",
    ses.ROLE_ASSISTANT: "assistant",
    ses.ROLE_TOOL: "tool",
}

TABLES = ("sessions", "turns", "messages", "events", "approvals")


async def all_messages(
    sessions: session_pb2_grpc.SessionServiceStub, session_id: str
) -> list[ses.Message]:
    """The whole history through ListMessages, page by page."""
    found: list[ses.Message] = []
    token = ""
    while True:
        page = await sessions.ListMessages(
            ses.ListMessagesRequest(session_id=session_id, page_size=50, page_token=token),
            timeout=10,
        )
        found += page.messages
        if not page.next_page_token:
            return found
        token = page.next_page_token


def message_problems(messages: Sequence[ses.Message]) -> list[str]:
    """Duplicate ids, holes or repeats in the positions, and what a provider would refuse."""
    problems: list[str] = []
    duplicated = [mid for mid, n in Counter(m.message_id for m in messages).items() if n > 1]
    if duplicated:
        problems.append(f"duplicate message ids {duplicated}")
    positions = [m.position for m in messages]
    if positions != list(range(1, len(messages) + 1)):
        problems.append(f"positions are not 1..{len(messages)}: {positions}")
    problems += history_problems(
        [
            (
                ROLE_NAMES.get(m.role, str(m.role)),
                m.tool_calls[0].call_id if m.tool_calls else None,
                m.tool_call_id or None,
            )
            for m in messages
        ]
    )
    return problems


def _connect(db_path: Path) -> sqlite3.Connection:
    # Read-only: these checks must never change (or checkpoint) the database they inspect.
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)


def row_counts(db_path: Path) -> dict[str, int]:
    with closing(_connect(db_path)) as db:
        return {
            table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in TABLES
        }


def turn_statuses(db_path: Path) -> list[tuple[str, str, str]]:
    """(turn_id, session_id, status) of every turn."""
    with closing(_connect(db_path)) as db:
        rows = db.execute("SELECT turn_id, session_id, status FROM turns").fetchall()
    return [(str(t), str(s), str(st)) for t, s, st in rows]
