"""The PostgreSQL tests' scratch schemas (tests/support/databases.py) see only their own
tables: a table left in the server's `public` schema, as a migration run by hand leaves
the runtime's, must not be found (it once made every PostgreSQL test fail with
"permission denied for table alembic_version")."""

from __future__ import annotations

import secrets

from sqlalchemy import make_url

from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.infrastructure.db.migrate import schema_is_current, upgrade_to_head
from tests.support.databases import (
    admin_connection,
    postgres_admin_url,
    query,
    scratch_postgres,
)


async def test_a_table_left_in_public_is_not_seen() -> None:
    admin_url = postgres_admin_url()
    stray = f"stray_{secrets.token_hex(4)}"
    admin = await admin_connection(admin_url)
    try:
        await admin.execute(f"CREATE TABLE public.{stray} (id integer)")
        await admin.execute(f"GRANT SELECT ON public.{stray} TO PUBLIC")
        async with scratch_postgres(admin_url) as url:
            schema = make_url(url).username
            assert await query(url, f"SELECT to_regclass('{stray}') IS NULL") == [(True,)]
            assert await query(url, "SELECT current_schemas(false)") == [([schema],)]
            engine = create_engine(url)
            try:
                await upgrade_to_head(engine)
                assert await schema_is_current(engine)
            finally:
                await engine.dispose()
            found_in = (
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass('alembic_version')"
            )
            assert await query(url, found_in) == [(schema,)]
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS public.{stray}")
        await admin.close()
