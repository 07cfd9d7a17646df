"""Values for an INSERT or UPDATE, checked against the table's columns.

SQLAlchemy quietly ignores a value whose key names no column of the statement's table (or
parameter): a misspelt key would leave its column unwritten. Every write's values are built
with row(), which refuses such a key at once.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Table


def row(table: Table, **values: Any) -> dict[str, Any]:
    """`values`, each keyed by a column of `table` (a KeyError names any other key)."""
    unknown = values.keys() - _column_keys(table)
    if unknown:
        raise KeyError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    return values


@functools.cache
def _column_keys(table: Table) -> frozenset[str]:
    # The tables are module constants; a turn builds a dozen rows.
    return frozenset(table.c.keys())
