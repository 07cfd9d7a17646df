"""Alembic environment. Run migrations through `agent-runtime migrate` (or at server start),
which hands us an open connection; see agent_runtime/infrastructure/db/migrate.py."""

from alembic import context

from agent_runtime.infrastructure.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `agent-runtime migrate`, not the alembic command")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
