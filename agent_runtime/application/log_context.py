"""What the log lines of the current request are about: request, tenant, session, turn.

Plain contextvars, no I/O. grpc.aio runs every RPC in its own task, and a task works on its
own copy of the context, so a value bound while serving one RPC never leaks into another:
nothing needs unbinding. The api layer binds request_id and (from the API key) tenant_id;
the turn handler binds session_id and turn_id. The log formatter reads them.
"""

from __future__ import annotations

from contextvars import ContextVar

FIELDS = ("request_id", "tenant_id", "session_id", "turn_id")

_values: dict[str, ContextVar[str]] = {name: ContextVar(name, default="") for name in FIELDS}


def bind(
    *,
    request_id: str | None = None,
    tenant_id: str | None = None,
    session_id: str | None = None,
    turn_id: str | None = None,
) -> None:
    """Set the given fields for the rest of the current task (None leaves a field as it is)."""
    for name, value in (
        ("request_id", request_id),
        ("tenant_id", tenant_id),
        ("session_id", session_id),
        ("turn_id", turn_id),
    ):
        if value is not None:
            _values[name].set(value)


def current() -> dict[str, str]:
    """Every field, "" where not known."""
    return {name: var.get() for name, var in _values.items()}
