"""A replica on PostgreSQL left without AGENT_RUNTIME_INSTANCE_ID says so at start-up."""

from __future__ import annotations

import logging

import pytest

from agent_runtime.application.turn_settings import DEFAULT_INSTANCE_ID
from agent_runtime.background import warn_if_unnamed_replica


def warnings_for(caplog: pytest.LogCaptureFixture, instance_id: str, dialect: str) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent_runtime"):
        warn_if_unnamed_replica(instance_id, dialect)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_postgresql_with_the_default_instance_id_warns(caplog: pytest.LogCaptureFixture) -> None:
    [warning] = warnings_for(caplog, DEFAULT_INSTANCE_ID, "postgresql")
    assert "AGENT_RUNTIME_INSTANCE_ID" in warning


def test_a_named_replica_or_sqlite_does_not(caplog: pytest.LogCaptureFixture) -> None:
    assert warnings_for(caplog, "replica-a", "postgresql") == []
    assert warnings_for(caplog, DEFAULT_INSTANCE_ID, "sqlite") == []
