"""row(): the values of a write, refused at once when a key names no column of the table
(SQLAlchemy would silently leave that column unwritten)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.tables import sessions


def test_a_row_of_columns_is_taken_as_it_is() -> None:
    assert row(sessions, title="t", agent="coder") == {"title": "t", "agent": "coder"}


def test_a_key_that_names_no_column_is_refused() -> None:
    with pytest.raises(KeyError, match="sessions has no column titel"):
        row(sessions, titel="t", agent="coder")


def test_sqlalchemy_would_drop_it_silently() -> None:
    # Why row() exists: compiling with an unknown key raises nothing, the key is dropped.
    dialect = create_async_engine("sqlite+aiosqlite://").dialect  # never connects
    keys = ["tenant_id", "session_id", "titel"]
    compiled = insert(sessions).compile(dialect=dialect, column_keys=keys)
    assert "titel" not in str(compiled)
