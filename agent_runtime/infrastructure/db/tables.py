"""The schema as SQLAlchemy Core tables. Alembic migrations create it; this mirrors them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)

from agent_runtime.domain.text import storable


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine (SQLite would otherwise hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoredText(TypeDecorator[str]):
    """Text columns store text as every store keeps it (domain/text.py): U+0000 as U+FFFD, on
    SQLite as on PostgreSQL, whose text types cannot hold it. Applied to every value bound to
    the column, in writes and in the lookups that compare with it alike."""

    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable(value)


class UnboundedText(StoredText):
    impl = Text
    cache_ok = True  # asked of each class itself


class BoundedText(StoredText):
    """At most `length` characters (a VARCHAR: PostgreSQL refuses longer ones, so the use cases
    check the lengths first)."""

    impl = String
    cache_ok = True


metadata = MetaData()


def _index_of_set_values(name: str, *columns: str) -> Index:
    """An index of only the rows whose last column is set (not NULL), on SQLite and
    PostgreSQL alike (migration 0009): fewer entries to write. A query comparing that column
    (`x = ?`, `x >= ?`) implies `x IS NOT NULL`, so it still uses the index."""
    where = text(f"{columns[-1]} IS NOT NULL")
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


def _tenant() -> Column[str]:
    return Column("tenant_id", BoundedText(64), nullable=False)


def _session_ref(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "session_id"],
        ["sessions.tenant_id", "sessions.session_id"],
        name=f"fk_{table}_session",
    )


# Sessions are keyed by (tenant_id, session_id): ids are unique per tenant, so no tenant can
# learn another's ids (migration 0004). Everything hanging off a session carries its tenant.
sessions = Table(
    "sessions",
    metadata,
    Column("tenant_id", BoundedText(64), primary_key=True),
    Column("session_id", BoundedText(128), primary_key=True),
    Column("agent", BoundedText(64), nullable=False),
    Column("title", UnboundedText(), nullable=False, default=""),
    Column("message_count", Integer, nullable=False, default=0),
    # The one running turn; a conditional UPDATE claims it, so it holds across processes.
    Column("running_turn_id", BoundedText(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_activity_at", UTCDateTime(), nullable=False),
    # Soft delete: the row stays (its id stays taken) but the session is NOT_FOUND everywhere.
    Column("deleted_at", UTCDateTime(), nullable=True),
    # What the client set for every turn (migration 0006): instructions, declared tools (JSON
    # list) and generation settings (JSON object of the fields set).
    Column("instructions", UnboundedText(), nullable=False, default=""),
    Column("tools", UnboundedText(), nullable=True),
    Column("generation", UnboundedText(), nullable=True),
    # Tokens of the ended turns, added in the commit that ends each turn (migration 0007).
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("counted_turns", Integer, nullable=False, default=0),
    Index("ix_sessions_tenant_activity", "tenant_id", "last_activity_at", "session_id"),
)

turns = Table(
    "turns",
    metadata,
    Column("turn_id", BoundedText(64), primary_key=True),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    Column("agent", BoundedText(64), nullable=False),
    Column("model", BoundedText(256), nullable=False),
    Column("status", BoundedText(16), nullable=False),
    Column("stop_reason", BoundedText(32), nullable=True),
    Column("input_message_id", BoundedText(64), nullable=True),
    Column("client_message_id", BoundedText(128), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("error_reason", BoundedText(64), nullable=True),
    Column("error_message", UnboundedText(), nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("input_hash", BoundedText(64), nullable=True),
    # The chunks a replay serves (all but deltas), with their original seq numbers: JSON.
    Column("chunks", UnboundedText(), nullable=False, default="[]"),
    Column("owner", BoundedText(128), nullable=False, default=""),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # What the turn did (migration 0007).
    Column("model_calls", Integer, nullable=False, default=0),
    Column("tool_calls", Integer, nullable=False, default=0),
    Column("first_token_ms", Integer, nullable=True),
    Index("ix_turns_status", "status"),
    # ListTurns pages (and the session's turns, for its foreign key); usage by end time (of
    # the ended turns only); the turns started in the last minute (quotas).
    Index("ix_turns_tenant_session_started", "tenant_id", "session_id", "started_at", "turn_id"),
    _index_of_set_values("ix_turns_tenant_finished", "tenant_id", "finished_at"),
    Index("ix_turns_tenant_started", "tenant_id", "started_at"),
    # Idempotency: one turn per client_message_id and session (NULLs never collide).
    UniqueConstraint(
        "tenant_id", "session_id", "client_message_id", name="uq_turns_client_message"
    ),
    _session_ref("turns"),
)

messages = Table(
    "messages",
    metadata,
    Column("message_id", BoundedText(64), primary_key=True),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    # 1-based, dense, append-only: a turn inserts rows, it never rewrites the history.
    Column("position", Integer, nullable=False),
    Column("role", BoundedText(16), nullable=False),
    Column("content", UnboundedText(), nullable=False),
    Column(
        "tool_calls", UnboundedText(), nullable=True
    ),  # JSON list of {call_id, tool_name, arguments}
    Column("tool_call_id", BoundedText(128), nullable=True),
    Column("turn_id", BoundedText(64), nullable=True),
    Column("incomplete", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("is_error", Boolean, nullable=False, default=False),
    # The call an assistant message requests (one tool at a time), to find it by call id.
    Column("requested_call_id", BoundedText(128), nullable=True),
    # An assistant message's reasoning, when its agent stores it (migration 0006).
    Column("reasoning", UnboundedText(), nullable=True),
    # Set when a regenerate or an edit dropped it from what the model sees (migration 0007).
    Column("superseded_by_turn_id", BoundedText(64), nullable=True),
    UniqueConstraint("tenant_id", "session_id", "position", name="uq_messages_session_position"),
    _session_ref("messages"),
    # Only the messages that carry a call id have an entry (most carry none).
    _index_of_set_values("ix_messages_requested_call", "session_id", "requested_call_id"),
    _index_of_set_values("ix_messages_tool_call", "session_id", "tool_call_id"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", BoundedText(64), primary_key=True),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    Column("call_id", BoundedText(128), nullable=False),
    Column("message_id", BoundedText(64), nullable=False),
    Column("turn_id", BoundedText(64), nullable=False),
    Column("tool_name", BoundedText(64), nullable=False),
    Column(
        "arguments", UnboundedText(), nullable=False
    ),  # JSON, as the model asked: kept for the record
    Column("final_arguments", UnboundedText(), nullable=True),  # JSON, what was approved to run
    Column("reason", UnboundedText(), nullable=False),
    Column("status", BoundedText(16), nullable=False),
    Column("feedback", UnboundedText(), nullable=False, default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime(), nullable=True),
    # The agent's rule that asked: JSON {tool, when, action}, and its 1-based position.
    Column("rule", UnboundedText(), nullable=True),
    Column("rule_index", Integer, nullable=False, default=0),
    UniqueConstraint("tenant_id", "session_id", "call_id", name="uq_approvals_session_call"),
    _session_ref("approvals"),
    Index("ix_approvals_session_status", "session_id", "status"),
)

# APPROVE_ALWAYS: "allow for the rest of this session" (migration 0007).
approval_grants = Table(
    "approval_grants",
    metadata,
    Column("grant_id", BoundedText(64), primary_key=True),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    Column("tool_name", BoundedText(128), nullable=False),
    Column("when_globs", UnboundedText(), nullable=False),  # JSON list of [argument, glob]
    Column("call_id", BoundedText(128), nullable=False),
    Column("turn_id", BoundedText(64), nullable=False),
    Column("granted_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    _session_ref("approval_grants"),
    Index("ix_approval_grants_session", "tenant_id", "session_id"),
)

# Tokens per tenant and UTC day, added in the commit that ends each turn: what the daily token
# quota is checked against (migration 0007).
tenant_usage_days = Table(
    "tenant_usage_days",
    metadata,
    Column("tenant_id", BoundedText(64), primary_key=True),
    Column("day", BoundedText(10), primary_key=True),  # YYYY-MM-DD
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("turns", Integer, nullable=False, default=0),
)

agent_switches = Table(
    "agent_switches",
    metadata,
    Column(
        "switch_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    Column("from_agent", BoundedText(64), nullable=False),
    Column("to_agent", BoundedText(64), nullable=False),
    Column("reason", UnboundedText(), nullable=False),
    Column("turn_id", BoundedText(64), nullable=True),
    Column("switched_at", UTCDateTime(), nullable=False),
    Index("ix_agent_switches_session", "session_id", "switch_id"),
    _session_ref("agent_switches"),
)

# The transactional outbox: written in the same transaction as the change it describes.
events = Table(
    "events",
    metadata,
    Column(
        "event_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("type", BoundedText(48), nullable=False),
    _tenant(),
    Column("session_id", BoundedText(128), nullable=False),
    Column("turn_id", BoundedText(64), nullable=True),
    Column("data", UnboundedText(), nullable=False),  # JSON object
    Column("occurred_at", UTCDateTime(), nullable=False),
    Index("ix_events_session", "session_id", "event_id"),
    Index("ix_events_tenant", "tenant_id", "event_id"),
)
