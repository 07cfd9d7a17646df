"""Turns as resources, usage per session and tenant, regenerate and edit, approval grants.

Turns count their model and tool calls and their time to first token; sessions add up the
tokens of their ended turns, and tenant_usage_days those of a tenant per UTC day (the daily
token quota); messages may be superseded by a later turn (regenerate, edit_message); an
approval keeps the rule that asked; approval_grants holds APPROVE_ALWAYS grants. The turns
that ended before the upgrade are counted in both totals, as the commit that ends a turn
counts it now.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The statuses of a turn whose ending commit counted its usage (TurnRecorder.save): an
# interrupted turn ended without one, so it is counted nowhere (nor in GetUsage's reports).
_COUNTED = "('completed', 'failed', 'cancelled')"
# A session's turns that count; `sessions` is the row being updated.
_SESSION_TURNS = (
    "FROM turns AS t WHERE t.tenant_id = sessions.tenant_id"
    f" AND t.session_id = sessions.session_id AND t.status IN {_COUNTED}"
)
# The UTC day (YYYY-MM-DD) a turn ended, as usage_day() makes it. SQLite keeps UTC times as
# text, 'YYYY-MM-DD HH:MM:SS.ffffff'; finished_at is always set on an ended turn, started_at
# only guards the day's NOT NULL.
_ENDED_AT = "COALESCE(finished_at, started_at)"
_UTC_DAY = {
    "sqlite": f"substr({_ENDED_AT}, 1, 10)",
    "postgresql": f"to_char({_ENDED_AT} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


def _zero(name: str, kind: type[sa.Integer] = sa.Integer) -> sa.Column[int]:
    return sa.Column(name, kind(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(_zero("prompt_tokens", sa.BigInteger))
        batch.add_column(_zero("completion_tokens", sa.BigInteger))
        batch.add_column(_zero("counted_turns"))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(_zero("model_calls"))
        batch.add_column(_zero("tool_calls"))
        batch.add_column(sa.Column("first_token_ms", sa.Integer(), nullable=True))
    op.create_index(
        "ix_turns_tenant_session_started",
        "turns",
        ["tenant_id", "session_id", "started_at", "turn_id"],
    )
    op.create_index("ix_turns_tenant_finished", "turns", ["tenant_id", "finished_at"])
    op.create_index("ix_turns_tenant_started", "turns", ["tenant_id", "started_at"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("superseded_by_turn_id", sa.String(64), nullable=True))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("rule", sa.Text(), nullable=True))
        batch.add_column(_zero("rule_index"))
    op.create_table(
        "approval_grants",
        sa.Column("grant_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("tool_name", sa.String(128), nullable=False),
        sa.Column("when_globs", sa.Text(), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "session_id"],
            ["sessions.tenant_id", "sessions.session_id"],
            name="fk_approval_grants_session",
        ),
    )
    op.create_index("ix_approval_grants_session", "approval_grants", ["tenant_id", "session_id"])
    op.create_table(
        "tenant_usage_days",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        _zero("prompt_tokens", sa.BigInteger),
        _zero("completion_tokens", sa.BigInteger),
        _zero("turns"),
    )
    _count_ended_turns()


def _count_ended_turns() -> None:
    """Sessions' totals and tenants' days, from the turns that ended before the upgrade."""
    op.execute(
        "UPDATE sessions SET"
        f" prompt_tokens = (SELECT COALESCE(SUM(t.prompt_tokens), 0) {_SESSION_TURNS}),"
        f" completion_tokens = (SELECT COALESCE(SUM(t.completion_tokens), 0) {_SESSION_TURNS}),"
        f" counted_turns = (SELECT COUNT(*) {_SESSION_TURNS})"
        f" WHERE EXISTS (SELECT 1 {_SESSION_TURNS})"
    )
    day = _UTC_DAY[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO tenant_usage_days (tenant_id, day, prompt_tokens, completion_tokens, turns)"
        f" SELECT tenant_id, {day}, SUM(prompt_tokens), SUM(completion_tokens), COUNT(*)"
        f" FROM turns WHERE status IN {_COUNTED} GROUP BY tenant_id, {day}"
    )


def downgrade() -> None:
    op.drop_table("tenant_usage_days")
    op.drop_index("ix_approval_grants_session", "approval_grants")
    op.drop_table("approval_grants")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("rule_index")
        batch.drop_column("rule")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("superseded_by_turn_id")
    op.drop_index("ix_turns_tenant_started", "turns")
    op.drop_index("ix_turns_tenant_finished", "turns")
    op.drop_index("ix_turns_tenant_session_started", "turns")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("first_token_ms")
        batch.drop_column("tool_calls")
        batch.drop_column("model_calls")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("counted_turns")
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
