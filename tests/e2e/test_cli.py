"""The `agent-runtime` command line as a user runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "runtime.db"
    result = run_cli("migrate", "--database-url", f"sqlite+aiosqlite:///{db}")
    assert result.returncode == 0, result.stderr
    tables = {
        row[0]
        for row in sqlite3.connect(db).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"sessions", "turns", "messages", "alembic_version"} <= tables


def test_bad_configuration_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        env={
            "AGENT_RUNTIME_LLM_EXTRA_HEADERS": "[1]",
            "AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        },
    )
    assert result.returncode == 2
    assert "AGENT_RUNTIME_LLM_EXTRA_HEADERS" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_agents_file_stops_start_up_naming_the_line(tmp_path: Path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[agents.coder]\nallowed_tools = ["read_file", "teleport"]\n')
    result = run_cli(
        "serve",
        env={
            "AGENT_RUNTIME_AGENTS_FILE": str(agents),
            "AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
            "AGENT_RUNTIME_LISTEN": "127.0.0.1:0",
        },
    )
    assert result.returncode == 2
    assert f"{agents}:2: unknown tool 'teleport'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()  # nothing touched
