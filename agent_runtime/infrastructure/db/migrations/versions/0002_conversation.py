"""Approvals, agent history, the event outbox, soft delete, tool-call lookups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_sessions_last_activity", "sessions", ["last_activity_at", "session_id"])

    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("is_error", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("requested_call_id", sa.String(128), nullable=True))
    op.create_index("ix_messages_requested_call", "messages", ["session_id", "requested_call_id"])
    op.create_index("ix_messages_tool_call", "messages", ["session_id", "tool_call_id"])

    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(64), primary_key=True),
        sa.Column(
            "session_id", sa.String(128), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=False),
        sa.Column("tool_name", sa.String(64), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("final_arguments", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("session_id", "call_id", name="uq_approvals_session_call"),
    )
    op.create_index("ix_approvals_session_status", "approvals", ["session_id", "status"])

    op.create_table(
        "agent_switches",
        sa.Column("switch_id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "session_id", sa.String(128), sa.ForeignKey("sessions.session_id"), nullable=False
        ),
        sa.Column("from_agent", sa.String(64), nullable=False),
        sa.Column("to_agent", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=True),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agent_switches_session", "agent_switches", ["session_id"])

    op.create_table(
        "events",
        sa.Column("event_id", _ID, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(48), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("turn_id", sa.String(64), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_session", "events", ["session_id", "event_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("agent_switches")
    op.drop_table("approvals")
    op.drop_index("ix_messages_tool_call", "messages")
    op.drop_index("ix_messages_requested_call", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("requested_call_id")
        batch.drop_column("is_error")
    op.drop_index("ix_sessions_last_activity", "sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("deleted_at")
