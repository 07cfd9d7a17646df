"""Tenants: every session belongs to one; session ids are unique per tenant.

A session is keyed by (tenant_id, session_id), so two tenants may use the same session id
and neither can learn that the other did. Every table that hangs off a session carries the
tenant too and refers to its session by the pair; the per-session unique keys (message
position, idempotency key, approval call id) become per tenant and session. Turn, message
and approval ids stay global keys: the server issues them, clients never choose them.
Existing rows belong to the default tenant (the one development mode serves).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration must not change meaning when the code's constant does.
DEFAULT_TENANT = "default"

# SQLite's foreign keys have no names; batch mode names the reflected ones like this.
_SQLITE_FK_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}

# Per-session unique keys: (name, table, columns after the tenant and session).
_UNIQUE = (
    ("uq_turns_client_message", "turns", ["client_message_id"]),
    ("uq_messages_session_position", "messages", ["position"]),
    ("uq_approvals_session_call", "approvals", ["call_id"]),
)
_CHILDREN = ("turns", "messages", "approvals", "agent_switches")


def _tenant_column() -> sa.Column[str]:
    return sa.Column(
        "tenant_id", sa.String(64), nullable=False, server_default=sa.text(f"'{DEFAULT_TENANT}'")
    )


def _session_fk_name(inspector: sa.Inspector, table: str) -> str:
    for fk in inspector.get_foreign_keys(table):
        if fk["referred_table"] == "sessions":
            return fk["name"] or f"fk_{table}_session_id_sessions"
    raise RuntimeError(f"{table} has no foreign key to sessions")


def _unkeyed_sessions(*, with_tenant: bool) -> sa.Table:
    """Sessions before (or after) this revision, minus the key: what SQLite's rebuild copies
    from, so the new table's key is the new one alone. PostgreSQL alters in place instead."""
    tenant = [_tenant_column()] if with_tenant else []
    return sa.Table(
        "sessions",
        sa.MetaData(),
        *tenant,
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("running_turn_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )


def _pk_name_to_drop(inspector: sa.Inspector) -> str | None:
    """PostgreSQL's key must be dropped by name; SQLite's rebuild copies an unkeyed table."""
    if op.get_bind().dialect.name == "sqlite":
        return None
    return inspector.get_pk_constraint("sessions")["name"]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    pk_name = _pk_name_to_drop(inspector)
    child_fks = {table: _session_fk_name(inspector, table) for table in _CHILDREN}

    # 1. The children let go of sessions(session_id), which stops being a key on its own.
    for table in _CHILDREN:
        with op.batch_alter_table(table, naming_convention=_SQLITE_FK_NAMES) as batch:
            batch.drop_constraint(child_fks[table], type_="foreignkey")
            batch.add_column(_tenant_column())

    # 2. Sessions: keyed by (tenant_id, session_id).
    op.drop_index("ix_sessions_last_activity", "sessions")
    with op.batch_alter_table("sessions", copy_from=_unkeyed_sessions(with_tenant=False)) as batch:
        batch.add_column(_tenant_column())
        if pk_name:
            batch.drop_constraint(pk_name, type_="primary")
        batch.create_primary_key("pk_sessions", ["tenant_id", "session_id"])
    op.create_index(
        "ix_sessions_tenant_activity", "sessions", ["tenant_id", "last_activity_at", "session_id"]
    )

    # 3. The children refer to their session by the pair; unique keys are per tenant.
    for table in _CHILDREN:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(
                f"fk_{table}_session",
                "sessions",
                ["tenant_id", "session_id"],
                ["tenant_id", "session_id"],
            )
    for name, table, columns in _UNIQUE:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="unique")
            batch.create_unique_constraint(name, ["tenant_id", "session_id", *columns])

    # 4. Events are read per tenant (WatchEvents), in id order.
    with op.batch_alter_table("events") as batch:
        batch.add_column(_tenant_column())
    op.create_index("ix_events_tenant", "events", ["tenant_id", "event_id"])


def downgrade() -> None:
    # Only possible while session ids are still unique across tenants.
    op.drop_index("ix_events_tenant", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("tenant_id")
    for name, table, columns in _UNIQUE:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="unique")
            batch.create_unique_constraint(name, ["session_id", *columns])
    for table in _CHILDREN:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_session", type_="foreignkey")
    op.drop_index("ix_sessions_tenant_activity", "sessions")
    pk_name = _pk_name_to_drop(sa.inspect(op.get_bind()))
    with op.batch_alter_table("sessions", copy_from=_unkeyed_sessions(with_tenant=True)) as batch:
        if pk_name:
            batch.drop_constraint(pk_name, type_="primary")
        batch.drop_column("tenant_id")
        batch.create_primary_key("pk_sessions", ["session_id"])
    op.create_index("ix_sessions_last_activity", "sessions", ["last_activity_at", "session_id"])
    for table in _CHILDREN:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tenant_id")
            batch.create_foreign_key(
                f"fk_{table}_session_id", "sessions", ["session_id"], ["session_id"]
            )
