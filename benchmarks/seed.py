"""Sessions with long histories, written straight into the runtime's SQLite file.

Run after `python -m agent_runtime migrate` and before the runtime starts. Rows follow
agent_runtime/infrastructure/db/tables.py: messages alternate user/assistant with dense
positions 1..N, and the session's message_count is N, as the runtime itself would leave them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

# SQLAlchemy's SQLite DATETIME storage format (the runtime stores UTC).
_STAMP = "%Y-%m-%d %H:%M:%S.%f"
_FILLER = (
    "Please look at the parser in src/parse.py and explain why the second branch of the "
    "state machine never fires when the input ends with a backslash; then propose a fix, "
    "keeping the public API unchanged, and list the tests that should cover it. "
)


def history_session_id(messages: int) -> str:
    return f"bench-history-{messages}"


def message_text(position: int, size: int) -> str:
    text = f"[{position}] " + _FILLER * (size // len(_FILLER) + 1)
    return text[:size]


def _fill(declared_type: str, stamp: str) -> object:
    """A value for a NOT NULL column without a default that this seeder does not know."""
    kind = declared_type.upper()
    if "DATE" in kind or "TIME" in kind:
        return stamp
    if any(word in kind for word in ("INT", "BOOL", "NUM", "REAL", "FLOA", "DOUB")):
        return 0
    return ""


class _Inserter:
    """An INSERT for the columns the table really has (the schema may have grown since this
    was written): known values by name, a neutral value for other required columns."""

    def __init__(self, connection: sqlite3.Connection, table: str, known: list[str]) -> None:
        info = connection.execute(f"PRAGMA table_info({table})").fetchall()
        if not info:
            raise RuntimeError(f"no table {table!r}: was the database migrated?")
        columns = {row[1]: row for row in info}  # name -> (cid, name, type, notnull, default, pk)
        missing = [name for name in known if name not in columns]
        if missing:
            raise RuntimeError(
                f"table {table} has no column(s) {missing}: update benchmarks/seed.py"
            )
        self.extra = [
            (name, str(row[2]))
            for name, row in columns.items()
            if name not in known and row[3] and row[4] is None and not row[5]
        ]
        names = known + [name for name, _ in self.extra]
        self.sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        )

    def row(self, values: tuple[object, ...], stamp: str) -> tuple[object, ...]:
        return values + tuple(_fill(kind, stamp) for _, kind in self.extra)


_SESSION_COLUMNS = [
    "session_id",
    "agent",
    "title",
    "message_count",
    "running_turn_id",
    "created_at",
    "last_activity_at",
]
_MESSAGE_COLUMNS = [
    "message_id",
    "session_id",
    "position",
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "turn_id",
    "incomplete",
    "created_at",
]


def _rows(
    inserter: _Inserter, session_id: str, count: int, size: int, start: datetime
) -> Iterator[tuple[object, ...]]:
    for position in range(1, count + 1):
        role = "user" if position % 2 else "assistant"
        created = (start + timedelta(milliseconds=position)).strftime(_STAMP)
        values = (
            f"msg_seed_{session_id}_{position}",
            session_id,
            position,
            role,
            message_text(position, size),
            None,
            None,
            None,
            0,
            created,
        )
        yield inserter.row(values, created)


def seed_histories(db_path: Path, lengths: list[int], message_bytes: int) -> list[str]:
    """One session per length, each with that many prior messages. Returns the session ids."""
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    created = start.strftime(_STAMP)
    connection = sqlite3.connect(db_path)
    try:
        sessions = _Inserter(connection, "sessions", _SESSION_COLUMNS)
        messages = _Inserter(connection, "messages", _MESSAGE_COLUMNS)
        with connection:
            for count in lengths:
                session_id = history_session_id(count)
                last = (start + timedelta(milliseconds=count)).strftime(_STAMP)
                values = (session_id, "coder", "", count, None, created, last)
                connection.execute(sessions.sql, sessions.row(values, last))
                connection.executemany(
                    messages.sql, _rows(messages, session_id, count, message_bytes, start)
                )
        check = connection.execute(
            "SELECT s.session_id, s.message_count, COUNT(m.message_id), MAX(m.position) "
            "FROM sessions s LEFT JOIN messages m ON m.session_id = s.session_id "
            "WHERE s.session_id LIKE 'bench-history-%' GROUP BY s.session_id"
        ).fetchall()
    finally:
        connection.close()
    for session_id, message_count, rows, last_position in check:
        if not message_count == rows == last_position:
            raise RuntimeError(f"seeding {session_id} went wrong: {message_count}, {rows}")
    return [history_session_id(count) for count in lengths]
