"""SQLite writer: the turn's hot statements compiled once, then run on the sqlite3 connection.

Why: through `Connection.execute` every statement pays SQLAlchemy's per-execution work (a
cache key computed from the statement, the compiled-cache lookup, an execution context,
result metadata and Row objects), about as much again as sqlite3 itself takes for a
statement on cached pages. A StreamMessage turn's statements on the writer (a dozen or so)
are all the repositories' module constants. Those are marked with `hot()`; WriterSession runs
them here (PostgreSQL's GuardedSession ignores the mark).

Only SQLAlchemy's public API: each statement is compiled by SQLAlchemy against the writer's
dialect, once per set of parameter names (`compile(dialect=, column_keys=)`, as SQLAlchemy
compiles it on execute), and the plan keeps the compiled `.string`, the order of its
parameters (`.positiontup`), their types' `bind_processor` (UTCDateTime, StoredText,
Boolean...), the constants the statement carries (`.params`) and the plain column defaults
SQLAlchemy would fill in (`Column.default.arg` of `.insert_prefetch`). Rows are named tuples
with each column's `result_processor` applied: `row.column` and `row[i]`, as repositories
read them. Whatever a plan cannot reproduce exactly (RETURNING, expanding or literal-execute
parameters, callable defaults, computed result columns, a required parameter not given)
runs through SQLAlchemy as before, decided once per statement and set of names.

Measured with benchmarks.ab (3 interleaved runs each, burst at c=32): the runtime's CPU per
turn from 3.43 to 3.02 ms (medians), 0.90x of before once divided by each run's floor
(docs/benchmarks/README.md, "Prepared statements on SQLite, again (issue 16)"). Per
statement, SQLAlchemy's path cost 25 us for a session read and this one 14 us.
"""

from __future__ import annotations

import collections
import functools
import keyword
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Dialect, Executable
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.sql.compiler import SQLCompiler

from agent_runtime.infrastructure.db.sqlite_driver import as_dbapi_error

S = TypeVar("S", bound=Executable)
Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

# The marked statements by id, each kept alive here so that its id stays its own. Only these
# exact objects: a statement derived from one (`.where()` on it) is new and runs as before.
_HOT: dict[int, Executable] = {}


def hot(statement: S) -> S:
    """Marks a statement built once (a module constant) to run on the SQLite writer's fast
    path. Each one marked is kept, and compiled, for the life of the process."""
    _HOT[id(statement)] = statement
    return statement


class HotStatements:
    """The plans of the marked statements, for one dialect (the writer's)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        # (id of the statement, parameter names, executemany) -> plan, or None: SQLAlchemy.
        self._plans: dict[tuple[int, frozenset[str], bool], Plan | None] = {}

    def plan(self, statement: Executable, params: Params) -> Plan | None:
        """The plan that runs `statement` with `params`; None: run it through SQLAlchemy."""
        if _HOT.get(id(statement)) is not statement:
            return None
        if params is None or isinstance(params, Mapping):
            first, many = params or {}, False
        elif params:
            first, many = params[0], True
        else:
            return None
        key = (id(statement), frozenset(first), many)
        try:
            return self._plans[key]
        except KeyError:
            plan = self._plans[key] = _compile(statement, self._dialect, key[1], many=many)
            return plan


_FROM_PARAMS = object()  # a slot whose value the caller's parameters give


def _compile(
    statement: Executable, dialect: Dialect, names: frozenset[str], *, many: bool
) -> Plan | None:
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=sorted(names), for_executemany=many
    )
    if (
        not isinstance(compiled, SQLCompiler)
        or not compiled.positional
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or compiled.escaped_bind_names
        or compiled.effective_returning
        or compiled.update_prefetch
    ):
        return None
    defaults: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        default = column.default
        if default is None or not default.is_scalar:
            return None  # computed at execution: SQLAlchemy's job
        defaults[column.key] = default.arg  # type: ignore[attr-defined]
    carried = compiled.params
    slots: list[tuple[str, Processor, Any]] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.expanding or bind.callable is not None:
            return None
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in names:
            slots.append((name, process, _FROM_PARAMS))
            continue
        if name in defaults:
            value = defaults[name]
        elif not bind.required:
            value = carried[name]
        else:
            return None  # SQLAlchemy raises its own error for the missing value
        slots.append((name, None, value if process is None else process(value)))
    row_type: Any = None
    result_processors: tuple[Processor, ...] = ()
    if getattr(statement, "is_select", False):
        columns = list(statement.selected_columns)  # type: ignore[attr-defined]
        fields = [getattr(column, "name", "") for column in columns]
        if (
            not all(isinstance(column, Column) for column in columns)
            or len(set(fields)) != len(fields)
            or not all(_plain_name(field) for field in fields)
        ):
            return None
        row_type = _row_type(fields)
        result_processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
    return Plan(compiled.string, tuple(slots), row_type, result_processors, many=many)


def _row_type(fields: list[str]) -> Any:
    return collections.namedtuple("Row", fields)


def _plain_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


class Plan:
    """One statement compiled for one set of parameter names."""

    __slots__ = ("_many", "_new_row", "_processed", "_row", "_slots", "sql")

    def __init__(
        self,
        sql: str,
        slots: tuple[tuple[str, Processor, Any], ...],
        row: Any,
        result_processors: tuple[Processor, ...],
        *,
        many: bool,
    ) -> None:
        self.sql = sql
        self._slots = slots
        self._row = row
        self._new_row = functools.partial(tuple.__new__, row)
        # (column index, processor) of the columns that have one
        self._processed = tuple(
            (index, process) for index, process in enumerate(result_processors) if process
        )
        self._many = many

    def run(self, driver_connection: Any, params: Params) -> HotResult:
        """Runs on the sqlite3 connection; its errors come out as SQLAlchemy's would."""
        # try/except, not the driver_errors() context manager: a dozen statements a turn.
        try:
            if self._many:
                assert isinstance(params, Sequence)
                values = [self._values(one) for one in params]
                return HotResult([], driver_connection.executemany(self.sql, values).rowcount)
            cursor = driver_connection.execute(
                self.sql, self._values(cast(Mapping[str, Any], params or {}))
            )
            if self._row is None:
                return HotResult([], cursor.rowcount)
            fetched = cursor.fetchall()
        except sqlite3.Error as exc:
            raise as_dbapi_error(self.sql, exc) from exc
        return HotResult(self._rows(fetched), -1)

    def _values(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        try:
            for name, process, value in self._slots:
                if value is _FROM_PARAMS:
                    value = params[name] if process is None else process(params[name])
                values.append(value)
        except KeyError as missing:  # a later row of an executemany without this name
            raise InvalidRequestError(f"a value is required for bind parameter {missing}") from None
        return values

    def _rows(self, fetched: list[tuple[Any, ...]]) -> list[Any]:
        # Column by column, with map(): no Python loop per row or per value.
        if fetched and self._processed:
            columns: list[Any] = list(zip(*fetched, strict=True))
            for index, process in self._processed:
                columns[index] = map(process, columns[index])
            return list(map(self._new_row, zip(*columns, strict=True)))
        return list(map(self._new_row, fetched))


class HotResult:
    """The part of SQLAlchemy's Result the repositories use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> HotScalars:
        return HotScalars(found[0] for found in self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class HotScalars(list[Any]):
    def all(self) -> list[Any]:
        return list(self)
