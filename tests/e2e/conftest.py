"""The e2e fixtures live in tests/support/runtime_fixtures.py (shared with tests/faults)."""

from tests.support.runtime_fixtures import (
    Client,
    client,
    connect,
    database_url,
    db_path,
    model_server,
    runtime,
    settings_overrides,
)

__all__ = [
    "Client",
    "client",
    "connect",
    "database_url",
    "db_path",
    "model_server",
    "runtime",
    "settings_overrides",
]
