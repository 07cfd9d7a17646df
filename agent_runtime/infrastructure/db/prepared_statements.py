"""SQLite: the statements the repositories build once, run on the sqlite3 connection itself.

SQLAlchemy's execution layer costs about 40 µs of CPU per statement on the 2-core machine
(a cache key computed from the statement on every call, an execution context, result
metadata), where sqlite3 alone runs the same statement on cached pages in 6-7 µs. A turn
runs about 20 statements (docs/benchmarks/README.md). So a statement the repositories build
once and mark with `prepared()` is compiled once per set of parameter names by SQLAlchemy
itself (the same SQL text, the same bind and result processors: UTCDateTime, Boolean, the
columns' plain defaults), and from then on runs on the driver's connection with no
SQLAlchemy in between. Its rows are named tuples: `row.column` and `row[i]`, as the
repositories use them.

What this cannot reproduce runs through SQLAlchemy as before, decided once per statement:
statements built per call (not marked), expanding IN lists, values computed at execution
(callable defaults), and result columns that are not plain names. PostgreSQL ignores the
mark.
"""

from __future__ import annotations

import collections
import keyword
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Dialect, Executable
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from agent_runtime.infrastructure.db.sqlite_driver import driver_errors, raw_connection

S = TypeVar("S", bound=Executable)

# The marked statements, by id, each kept alive here so that no other statement can ever
# have its id. Only these exact objects are marked: a statement derived from one (`.where()`
# on a marked constant) is a new object, built per call, and runs through SQLAlchemy.
_MARKED: dict[int, Executable] = {}

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
Processor = Callable[[Any], Any] | None


def prepared(statement: S) -> S:
    """Marks a statement built once (a module constant): on SQLite it may skip SQLAlchemy's
    per-execution work. Only for statements that are not rebuilt per call: each one marked
    is kept, and compiled, for the life of the process."""
    _MARKED[id(statement)] = statement
    return statement


class PreparedStatements:
    """Runs statements on a SQLAlchemy Connection to SQLite: the marked ones on its sqlite3
    connection, compiled once; the others through SQLAlchemy."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        # (id of the statement, parameter names) -> compiled, or None: SQLAlchemy runs it.
        # Marked statements live as long as the process (_MARKED), so their ids stay theirs.
        self._compiled: dict[tuple[int, frozenset[str]], _Compiled | None] = {}
        # For tests and the benchmarks' account: statements run on the driver, and marked
        # statements that SQLAlchemy had to run.
        self.runs = 0
        self.fallbacks = 0

    def execute(self, connection: Connection, statement: Executable, params: Params = None) -> Any:
        result = self._run(connection, statement, params)
        return connection.execute(statement, params) if result is None else result

    def scalar(self, connection: Connection, statement: Executable, params: Params = None) -> Any:
        result = self._run(connection, statement, params)
        if result is None:
            return connection.scalar(statement, params)  # type: ignore[arg-type]
        return result.scalar()

    def scalars(self, connection: Connection, statement: Executable, params: Params = None) -> Any:
        result = self._run(connection, statement, params)
        return connection.scalars(statement, params) if result is None else result.scalars()

    def _run(
        self, connection: Connection, statement: Executable, params: Params
    ) -> PreparedResult | None:
        """The statement's result if it ran on the driver; None: SQLAlchemy is to run it."""
        compiled = self._compiled_for(statement, params)
        if compiled is None:
            return None
        self.runs += 1
        return compiled.run(raw_connection(connection), params)

    def _compiled_for(self, statement: Executable, params: Params) -> _Compiled | None:
        if _MARKED.get(id(statement)) is not statement:
            return None
        first = (params[0] if params else {}) if isinstance(params, Sequence) else params or {}
        key = (id(statement), frozenset(first))
        try:
            compiled = self._compiled[key]
        except KeyError:
            compiled = self._compiled[key] = _compile(statement, self._dialect, key[1])
        if compiled is None:
            self.fallbacks += 1
        return compiled


def _compile(statement: Executable, dialect: Dialect, names: frozenset[str]) -> _Compiled | None:
    """The statement compiled as SQLAlchemy would for these parameter names; None if this
    module cannot run it as SQLAlchemy would."""
    column_keys = sorted(names) if isinstance(statement, Insert | Update) else None
    compiler = statement.compile(dialect=dialect, column_keys=column_keys)  # type: ignore[attr-defined]
    assert isinstance(compiler, SQLCompiler)
    if not compiler.positional or compiler.literal_execute_params or compiler.post_compile_params:
        return None
    constants: dict[str, Any] = {}
    for name in compiler.positiontup or ():
        bind = compiler.binds[name]
        if bind.expanding or bind.callable is not None:
            return None
        if not bind.required:
            constants[name] = bind.value
    for column in compiler.insert_prefetch:
        if column.default is None or not column.default.is_scalar:
            return None
        constants[column.key] = column.default.arg  # type: ignore[attr-defined]
    for column in compiler.update_prefetch:
        if column.onupdate is None or not column.onupdate.is_scalar:
            return None
        constants[column.key] = column.onupdate.arg  # type: ignore[attr-defined]
    processors = compiler._bind_processors
    positions = tuple(compiler.positiontup or ())
    row_type: Any = None
    result_processors: tuple[Processor, ...] = ()
    columns = compiler._result_columns
    if columns:
        names_out = [column[0] for column in columns]
        if len(set(names_out)) != len(names_out) or not all(
            name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
            for name in names_out
        ):
            return None
        row_type = _row_type(names_out)
        result_processors = tuple(
            column[3]._cached_result_processor(dialect, None) for column in columns
        )
    return _Compiled(
        compiler.string,
        positions,
        tuple(processors.get(name) for name in positions),  # type: ignore[misc]
        constants,
        row_type,
        result_processors,
    )


def _row_type(names: list[str]) -> Any:
    return collections.namedtuple("Row", names)


class _Compiled:
    __slots__ = ("_constants", "_names", "_processors", "_result_processors", "_row", "_sql")

    def __init__(
        self,
        sql: str,
        names: tuple[str, ...],
        processors: tuple[Processor, ...],
        constants: dict[str, Any],
        row: type[NamedTuple] | None,
        result_processors: tuple[Processor, ...],
    ) -> None:
        self._sql = sql
        self._names = names
        self._processors = processors
        self._constants = constants
        self._row = row
        self._result_processors = result_processors if any(result_processors) else ()

    def run(self, raw: Any, params: Params) -> PreparedResult:
        with driver_errors(self._sql):
            if isinstance(params, Sequence):  # executemany: never returns rows here
                cursor = raw.executemany(self._sql, [self._values(p) for p in params])
                return PreparedResult([], cursor.rowcount)
            cursor = raw.execute(self._sql, self._values(params or {}))
            if self._row is None:
                return PreparedResult([], cursor.rowcount)
            fetched = cursor.fetchall()
        return PreparedResult(self._rows(fetched), -1)

    def _values(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, processor in zip(self._names, self._processors, strict=True):
            if name in params:
                value = params[name]
            elif name in self._constants:
                value = self._constants[name]
            else:
                raise InvalidRequestError(f"a value is required for bind parameter {name!r}")
            values.append(value if processor is None else processor(value))
        return values

    def _rows(self, fetched: list[tuple[Any, ...]]) -> list[Any]:
        make = self._row._make  # type: ignore[union-attr]
        processors = self._result_processors
        if not processors:
            return [make(row) for row in fetched]
        return [
            make([v if p is None else p(v) for p, v in zip(processors, row, strict=True)])
            for row in fetched
        ]


class PreparedResult:
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

    def scalars(self) -> _Scalars:
        return _Scalars([row[0] for row in self._rows])

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _Scalars(list[Any]):
    def all(self) -> list[Any]:
        return list(self)
