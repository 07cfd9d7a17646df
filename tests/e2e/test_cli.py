"""The `agent-runtime` command line as a user runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_RUNTIME_")}
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime", *args],
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "runtime.db"
    # The server's rules are not migrate's: no keys and a public address are fine here.
    result = run_cli(
        "migrate",
        "--database-url",
        f"sqlite+aiosqlite:///{db}",
        env={"AGENT_RUNTIME_LISTEN": "0.0.0.0:50051"},
    )
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


def test_serve_without_keys_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--listen",
        "0.0.0.0:0",
        env={"AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0:0: no API keys are configured" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_an_unreachable_database_is_a_clear_message_not_a_traceback(command: str) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"  # nothing listens there
    result = run_cli(command, "--database-url", url)
    assert result.returncode == 1
    assert "cannot use the database (AGENT_RUNTIME_DATABASE_URL)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reads_the_keys_file_flag_and_names_a_bad_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("good-key=tenant-a\nsecret-without-tenant\n")
    result = run_cli(
        "serve",
        "--api-keys-file",
        str(keys),
        env={"AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
    )
    assert result.returncode == 2
    assert "AGENT_RUNTIME_API_KEYS_FILE, line 2: expected key=tenant" in result.stderr
    assert "secret-without-tenant" not in result.stderr


@pytest.mark.parametrize("name", ["AGENT_RUNTIME_API_KEYS", "AGENT_RUNTIME_TLS_CERT_FILE"])
def test_an_auth_variable_set_but_empty_stops_serve(tmp_path: Path, name: str) -> None:
    # Before: AGENT_RUNTIME_API_KEYS="" meant no keys, so development mode and no
    # authentication, without a word.
    result = run_cli(
        "serve",
        env={"AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db", name: ""},
    )
    assert result.returncode == 2
    assert f"agent-runtime: {name} is set but empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_bad_value_is_one_line_naming_variable_and_value_never_a_secret(
    tmp_path: Path,
) -> None:
    result = run_cli(
        "serve",
        "--llm-api-key",
        "sk-very-secret",
        env={
            "AGENT_RUNTIME_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
            "AGENT_RUNTIME_LLM_MAX_ATTEMPTS": "zero",
        },
    )
    assert result.returncode == 2
    assert result.stderr == (
        "agent-runtime: AGENT_RUNTIME_LLM_MAX_ATTEMPTS='zero': must be a whole number\n"
    )


def test_a_client_command_loads_none_of_the_servers_modules() -> None:
    # They are most of the start-up time of a command like `agent-runtime usage`.
    server_modules = ("agent_runtime.bootstrap", "agent_runtime.config", "sqlalchemy", "aiohttp")
    probe = (
        "import sys\n"
        "from agent_runtime import cli\n"
        "try:\n"
        "    cli.main(['usage', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in sys.modules if m.startswith({server_modules!r})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.splitlines()[-1] == "[]"
