"""Fewer index entries per turn: each turn writes its row twice and two messages or more,
and every index of those tables is written with them.

- ix_turns_session_id goes: ix_turns_tenant_session_started (tenant_id, session_id, ...)
  serves every query by session, all of which name the tenant, and the foreign key.
- ix_turns_tenant_finished keeps only the ended turns (those with an end time; the queries
  that use it name a range of end times).
- ix_messages_requested_call and ix_messages_tool_call keep only the messages with a call id.

On PostgreSQL the indexes are rebuilt under a lock that holds writes to the table back
while it lasts (as migration 0008's did).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns, the rows it keeps)
_PARTIAL = [
    ("ix_turns_tenant_finished", "turns", ["tenant_id", "finished_at"], "finished_at IS NOT NULL"),
    (
        "ix_messages_requested_call",
        "messages",
        ["session_id", "requested_call_id"],
        "requested_call_id IS NOT NULL",
    ),
    (
        "ix_messages_tool_call",
        "messages",
        ["session_id", "tool_call_id"],
        "tool_call_id IS NOT NULL",
    ),
]


def upgrade() -> None:
    op.drop_index("ix_turns_session_id", "turns")
    for name, table, columns, where in _PARTIAL:
        op.drop_index(name, table)
        condition = sa.text(where)
        op.create_index(name, table, columns, sqlite_where=condition, postgresql_where=condition)


def downgrade() -> None:
    for name, table, columns, _where in _PARTIAL:
        op.drop_index(name, table)
        op.create_index(name, table, columns)
    op.create_index("ix_turns_session_id", "turns", ["session_id"])
