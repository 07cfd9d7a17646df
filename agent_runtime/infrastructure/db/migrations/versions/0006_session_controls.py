"""What a client sets on a session (instructions, declared tools, generation defaults), and
the reasoning stored with an assistant message when its agent keeps it.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("instructions", sa.Text(), nullable=False, server_default=""))
        # JSON: a list of {name, description, parameters, requires_approval}; NULL: none.
        batch.add_column(sa.Column("tools", sa.Text(), nullable=True))
        # JSON: the generation settings that are set; NULL: none.
        batch.add_column(sa.Column("generation", sa.Text(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reasoning", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reasoning")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("generation")
        batch.drop_column("tools")
        batch.drop_column("instructions")
