"""A session's agent switches are read newest first (GetSession) and paged by switch_id
(ListAgentSwitches): index them by (session_id, switch_id), so neither sorts a session's
whole history.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_agent_switches_session", "agent_switches")
    op.create_index("ix_agent_switches_session", "agent_switches", ["session_id", "switch_id"])


def downgrade() -> None:
    op.drop_index("ix_agent_switches_session", "agent_switches")
    op.create_index("ix_agent_switches_session", "agent_switches", ["session_id"])
