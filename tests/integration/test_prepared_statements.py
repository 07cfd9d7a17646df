"""Prepared statements on SQLite (prepared_statements.py), on a real migrated file: a marked
statement run on the driver writes and reads exactly what SQLAlchemy would (defaults,
aware datetimes, booleans, rowcounts, executemany), fails as SQLAlchemy would, and the
repositories' statements of a turn all take that path, on the writer and on the readers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InvalidRequestError

from agent_runtime.domain.errors import WriteConflict
from agent_runtime.domain.events import Event, EventType
from agent_runtime.domain.model import Message, Role, Session, Turn
from agent_runtime.domain.tenants import DEFAULT_TENANT as TENANT
from agent_runtime.infrastructure.db import (
    event_repository,
    message_repository,
    session_repository,
    turn_repository,
)
from agent_runtime.infrastructure.db.engine import create_sqlite_writer_engine
from agent_runtime.infrastructure.db.guarded_session import translate_error
from agent_runtime.infrastructure.db.prepared_statements import PreparedStatements, prepared
from agent_runtime.infrastructure.db.sqlite_writer import SqliteWriter
from agent_runtime.infrastructure.db.tables import events, messages, sessions

NOW = datetime(2026, 5, 1, 12, 0, 7, 123456, tzinfo=UTC)
KEY = {"key_tenant": TENANT, "key_session": "s1"}


@pytest.fixture
def connection(db_file: Path) -> Iterator[Connection]:
    engine = create_sqlite_writer_engine(make_url(f"sqlite:///{db_file}"))
    with engine.connect() as connection, connection.begin():
        yield connection
    engine.dispose()


@pytest.fixture
def statements(connection: Connection) -> PreparedStatements:
    return PreparedStatements(connection.dialect)


def _session_values(session_id: str = "s1") -> dict[str, object]:
    # title and message_count left out: their column defaults apply
    return {
        "tenant_id": TENANT,
        "session_id": session_id,
        "agent": "coder",
        "running_turn_id": None,
        "created_at": NOW,
        "last_activity_at": NOW,
    }


def test_a_row_written_on_the_driver_reads_back_through_sqlalchemy_the_same(
    connection: Connection, statements: PreparedStatements
) -> None:
    statements.execute(connection, session_repository._INSERT_SESSION, _session_values())
    assert statements.runs == 1
    row = connection.execute(select(sessions).where(sessions.c.session_id == "s1")).one()
    assert row.title == "" and row.message_count == 0  # the columns' defaults
    assert row.created_at == NOW and row.created_at.tzinfo is not None


def test_a_row_read_on_the_driver_is_what_sqlalchemy_reads(
    connection: Connection, statements: PreparedStatements
) -> None:
    connection.execute(insert(sessions), _session_values())
    message = {
        "tenant_id": TENANT,
        "message_id": "m1",
        "session_id": "s1",
        "position": 1,
        "role": "assistant",
        "content": "partly",
        "incomplete": True,
        "created_at": NOW,
    }
    connection.execute(insert(messages), message)

    ours = statements.execute(connection, session_repository._GET_SESSION, KEY).first()
    theirs = connection.execute(session_repository._GET_SESSION, KEY).one()
    assert tuple(ours) == tuple(theirs)
    assert ours.last_activity_at == NOW and ours.last_activity_at.tzinfo is UTC
    recent = statements.execute(
        connection, message_repository._RECENT_MESSAGES, {**KEY, "key_limit": 5}
    )
    [message_row] = recent.all()
    assert message_row.incomplete is True and message_row.is_error is False  # not 1 and 0
    assert message_row.content == "partly" and message_row[0] == "m1"
    assert statements.scalar(connection, session_repository._RUNNING_TURN, KEY) is None
    assert statements.runs == 3


def test_rowcounts_and_executemany(connection: Connection, statements: PreparedStatements) -> None:
    statements.execute(connection, session_repository._INSERT_SESSION, _session_values())
    claim = {**KEY, "key_turn": "t1"}
    assert statements.execute(connection, session_repository._CLAIM_SESSION, claim).rowcount == 1
    assert statements.execute(connection, session_repository._CLAIM_SESSION, claim).rowcount == 0
    assert statements.scalar(connection, session_repository._RUNNING_TURN, KEY) == "t1"
    rows = [
        {
            "type": "turn.started",
            "tenant_id": TENANT,
            "session_id": "s1",
            "turn_id": "t1",
            "data": "{}",
            "occurred_at": NOW,
        }
    ] * 3
    assert statements.execute(connection, event_repository._INSERT_EVENT, rows).rowcount == 3
    assert connection.scalars(select(events.c.occurred_at)).all() == [NOW] * 3


def test_failures_are_those_sqlalchemy_raises(
    connection: Connection, statements: PreparedStatements
) -> None:
    statements.execute(connection, session_repository._INSERT_SESSION, _session_values())
    with pytest.raises(DBAPIError) as duplicate:
        statements.execute(connection, session_repository._INSERT_SESSION, _session_values())
    assert isinstance(translate_error(duplicate.value), WriteConflict)
    with pytest.raises(InvalidRequestError, match="key_session"):
        statements.execute(connection, session_repository._GET_SESSION, {"key_tenant": TENANT})


def test_what_cannot_run_on_the_driver_runs_through_sqlalchemy(
    connection: Connection, statements: PreparedStatements
) -> None:
    statements.execute(connection, session_repository._INSERT_SESSION, _session_values("s1"))
    unmarked = select(sessions.c.session_id)
    in_list = prepared(select(sessions.c.session_id).where(sessions.c.session_id.in_(["s1"])))
    expanding = prepared(
        select(sessions.c.session_id).where(
            sessions.c.session_id.in_(bindparam("ids", expanding=True))
        )
    )
    derived = session_repository._GET_SESSION.where(
        sessions.c.agent == "coder"
    )  # a new object, per call
    assert statements.scalars(connection, unmarked).all() == ["s1"]
    assert statements.execute(connection, derived, KEY).first().session_id == "s1"
    assert statements.scalars(connection, in_list).all() == ["s1"]
    assert statements.execute(connection, expanding, {"ids": ["s1", "s2"]}).all() == [("s1",)]
    assert statements.runs == 1  # the insert; IN lists are expanded as each call runs
    assert statements.fallbacks == 2  # the two marked IN lists; derived was never marked


async def test_a_turns_statements_run_on_the_driver_of_the_writer(db_file: Path) -> None:
    url = make_url(f"sqlite+aiosqlite:///{db_file}")
    writer = SqliteWriter(url)
    try:
        db = writer.session()
        session_repo = session_repository.SqlAlchemySessionRepository(db, TENANT)
        turn_repo = turn_repository.SqlAlchemyTurnRepository(db, TENANT)
        message_repo = message_repository.SqlAlchemyMessageRepository(db, TENANT)
        outbox = event_repository.SqlAlchemyEventRepository(db, TENANT)
        await session_repo.add(Session("s1", "coder", NOW, NOW))
        await db.commit()

        assert await session_repo.get("s1") is not None
        assert await session_repo.claim_turn("s1", "t1") is None
        assert await message_repo.recent("s1", 10) == []
        await message_repo.add(Message("m1", "s1", 1, Role.USER, "hi", NOW, turn_id="t1"))
        await turn_repo.add(Turn("t1", "s1", "coder", "m", NOW), [])
        await outbox.add(Event(EventType.TURN_STARTED, "s1", NOW, turn_id="t1"))
        await outbox.flush()
        await session_repo.record_activity("s1", NOW, message_count=1, release_turn="t1")
        await db.commit()
        assert writer.statements.runs == 8 and writer.statements.fallbacks == 0
    finally:
        await writer.close()
