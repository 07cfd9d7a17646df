"""Settings from the environment: every documented variable, per concern, and the errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from agent_runtime.api.transport import Transport
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.cli import _parser
from agent_runtime.config import (
    ConfigError,
    DatabaseSettings,
    ServerSettings,
    Settings,
    concerns,
    variables,
)
from agent_runtime.infrastructure.db.engine import normalise_database_url
from agent_runtime.infrastructure.llm.endpoint import AnswerSizes, FakeModelSettings, ModelEndpoint
from agent_runtime.infrastructure.observability.settings import ObservabilitySettings
from agent_runtime.server_commands import settings_from

README = Path(__file__).parents[2] / "README.md"
_ROW = re.compile(r"^\| `(AGENT_RUNTIME_\w+)` \| ([^|]+) \|")


def documented() -> dict[str, str]:
    """The README's configuration table: variable -> its default column."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Configuration") : text.index("### Authentication")]
    rows = [m.groups() for line in table.splitlines() if (m := _ROW.match(line))]
    assert len(rows) == len({name for name, _ in rows}), "a variable documented twice"
    return {name: default.strip() for name, default in rows}


def shown(info: FieldInfo) -> str | None:
    """A model default as the README writes it; None for none (unset, empty)."""
    value = info.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, dict) else str(value)


def test_the_readme_documents_every_variable_with_its_default() -> None:
    in_readme, in_models = documented(), variables()
    fields = sum(len(model.model_fields) for _, model, _ in concerns())
    assert len(in_models) == fields, "two fields read the same variable"
    assert sorted(in_readme) == sorted(in_models)
    for name, cell in in_readme.items():
        default = shown(in_models[name])
        if cell.startswith("*("):  # "*(none)*", "*(unset: ...)*": no value
            assert default is None, f"{name}: the README says none, the model {default!r}"
        else:
            assert cell == f"`{default}`", f"{name}: the README says {cell}, the model {default}"


def test_defaults_run_anywhere(environment: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.server.listen == "127.0.0.1:50051"
    assert settings.database.url == "sqlite+aiosqlite:///./data/agent_runtime.db"
    assert settings.model.is_fake
    assert settings.api_keys.development_mode
    assert not settings.tls.enabled


def read(environment: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        environment.setenv(f"AGENT_RUNTIME_{name}", value)
    return Settings.from_env()


def test_server_and_database(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = read(
        environment,
        LISTEN="127.0.0.2:6000",
        MAX_CONCURRENT_STREAMS="50",
        REFLECTION="false",
        SHUTDOWN_GRACE_SECONDS="2.5",
        AGENTS_FILE=str(tmp_path / "agents.toml"),
        NATS_URL="nats://user:pw@nats:4222",
        DATABASE_URL="postgresql://u@db/runtime",
        DATABASE_POOL_SIZE="25",
    )
    assert settings.server == ServerSettings(
        listen="127.0.0.2:6000",
        max_concurrent_streams=50,
        reflection=False,
        shutdown_grace_seconds=2.5,
        agents_file=str(tmp_path / "agents.toml"),
        nats_url="nats://user:pw@nats:4222",
    )
    assert settings.database == DatabaseSettings(url="postgresql://u@db/runtime", pool_size=25)
    assert "pw@" not in repr(settings)


def test_model_endpoint(environment: pytest.MonkeyPatch) -> None:
    settings = read(
        environment,
        LLM_BASE_URL="http://llm:4000/v1",
        LLM_API_KEY="sk-secret",
        LLM_MODEL="qwen",
        LLM_EXTRA_HEADERS='{"X-Team": "infra"}',
        LLM_STREAM="false",
        LLM_CONNECT_TIMEOUT="1.5",
        LLM_FIRST_TOKEN_TIMEOUT="20",
        LLM_IDLE_TIMEOUT="30",
        LLM_READ_TIMEOUT="120",
        LLM_MAX_ATTEMPTS="5",
        LLM_MAX_CONNECTIONS="64",
        LLM_RETRY_BASE_DELAY="0.25",
        LLM_HTTP_TRANSPORT=" HTTPX ",
        LLM_MAX_EVENT_BYTES="8000",
        MAX_ANSWER_BYTES="2000",
        MAX_TOOL_ARGUMENT_BYTES="1000",
        FAKE_MODEL_WORD_DELAY_MS="0",
    )
    assert settings.model == ModelEndpoint(
        base_url="http://llm:4000/v1",
        api_key=SecretStr("sk-secret"),
        model="qwen",
        extra_headers={"X-Team": "infra"},
        stream=False,
        connect_timeout=1.5,
        first_token_timeout=20,
        idle_timeout=30,
        read_timeout=120,
        max_attempts=5,
        max_connections=64,
        retry_base_delay=0.25,
        http_transport="httpx",
        max_event_bytes=8000,
    )
    assert settings.answers == AnswerSizes(max_answer_bytes=2000, max_tool_argument_bytes=1000)
    assert settings.fake_model == FakeModelSettings(word_delay_ms=0)
    assert not settings.model.is_fake
    assert "sk-secret" not in repr(settings) and "infra" not in repr(settings)


def test_turns(environment: pytest.MonkeyPatch) -> None:
    settings = read(
        environment,
        CONTEXT_WINDOW_MESSAGES="50",
        MAX_MESSAGE_BYTES="1000",
        MAX_ITERATIONS="3",
        APPROVAL_TTL_SECONDS="60",
        TURN_TIMEOUT_SECONDS="120.5",
        INSTANCE_ID="replica-a",
        LEASE_SECONDS="12",
    )
    assert settings.turns == TurnSettings(
        context_window_messages=50,
        max_message_bytes=1000,
        max_iterations=3,
        approval_ttl_seconds=60,
        turn_timeout_seconds=120.5,
        instance_id="replica-a",
        lease_seconds=12,
    )


def test_transport(environment: pytest.MonkeyPatch) -> None:
    settings = read(
        environment,
        GRPC_MAX_RECEIVE_MESSAGE_BYTES="8388608",
        GRPC_MAX_SEND_MESSAGE_BYTES="5000000",
        GRPC_KEEPALIVE_TIME_MS="30000",
        GRPC_KEEPALIVE_TIMEOUT_MS="5000",
        GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS="false",
        GRPC_MIN_PING_INTERVAL_MS="1000",
        GRPC_MAX_PINGS_WITHOUT_DATA="2",
        GRPC_MAX_CONCURRENT_STREAMS_PER_CONNECTION="100",
    )
    assert settings.transport == Transport(
        max_receive_message_bytes=8388608,
        max_send_message_bytes=5000000,
        keepalive_time_ms=30000,
        keepalive_timeout_ms=5000,
        keepalive_permit_without_calls=False,
        min_ping_interval_ms=1000,
        max_pings_without_data=2,
        max_concurrent_streams_per_connection=100,
    )


def test_message_limits_left_unset_make_room_for_the_largest_message() -> None:
    assert Settings().grpc_transport.max_receive_message_bytes == 4 * 1024 * 1024  # the least
    large = Settings(turns=TurnSettings(max_message_bytes=3 * 1024 * 1024))
    limits = large.grpc_transport
    assert limits.max_receive_message_bytes == limits.max_send_message_bytes == 6 * 1024 * 1024
    explicit = Settings(transport=Transport(max_receive_message_bytes=8 * 1024 * 1024))
    assert explicit.grpc_transport.max_receive_message_bytes == 8 * 1024 * 1024
    assert explicit.grpc_transport.max_send_message_bytes == 4 * 1024 * 1024


def test_observability(environment: pytest.MonkeyPatch) -> None:
    settings = read(
        environment,
        LOG_LEVEL="debug",
        LOG_FORMAT="JSON",
        METRICS_LISTEN="0.0.0.0:9464",
        OTEL_ENABLED="true",
        HEALTH_CHECK_INTERVAL_SECONDS="2.5",
        HEALTH_CHECK_TIMEOUT_SECONDS="1",
    )
    assert settings.observability == ObservabilitySettings(
        log_level="DEBUG",
        log_format="json",
        metrics_listen="0.0.0.0:9464",
        otel_enabled=True,
        health_check_interval_seconds=2.5,
        health_check_timeout_seconds=1,
    )


def test_an_empty_variable_means_unset(environment: pytest.MonkeyPatch) -> None:
    settings = read(environment, LLM_MODEL="", MAX_ITERATIONS="", LLM_STREAM="")
    assert settings == Settings()


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("LLM_STREAM", "maybe", "must be true or false"),
        ("LLM_HTTP_TRANSPORT", "requests", "must be 'aiohttp' or 'httpx'"),
        ("LLM_MAX_ATTEMPTS", "0", "must be greater than 0"),
        ("LLM_CONNECT_TIMEOUT", "inf", "must be a finite number"),
        ("MAX_MESSAGE_BYTES", "lots", "must be a whole number"),
        ("CONTEXT_WINDOW_MESSAGES", "0", "must be greater than 0"),
        ("TURN_TIMEOUT_SECONDS", "soon", "must be a number"),
        ("LOG_FORMAT", "xml", "must be 'text' or 'json'"),
        ("LOG_LEVEL", "chatty", "must be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("OTEL_ENABLED", "sometimes", "must be true or false"),
        ("REFLECTION", "hidden", "must be true or false"),
        ("HEALTH_CHECK_INTERVAL_SECONDS", "0", "must be greater than 0"),
        ("FAKE_MODEL_WORD_DELAY_MS", "-1", "must be greater than or equal to 0"),
        ("FAKE_MODEL_WORD_DELAY_MS", "2.5", "must be a whole number"),
        ("DATABASE_POOL_SIZE", "0", "must be greater than 0"),
        ("GRPC_KEEPALIVE_TIME_MS", "0", "must be greater than 0"),
        ("GRPC_MAX_PINGS_WITHOUT_DATA", "-1", "must be greater than or equal to 0"),
        ("GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS", "maybe", "must be true or false"),
        ("GRPC_MAX_CONCURRENT_STREAMS_PER_CONNECTION", "lots", "must be a whole number"),
        ("CONTEXT_WINDOW_TOKENS", "0", "must be greater than 0"),
        ("CONTEXT_MAX_TOOL_RESULT_SHARE", "1.5", "must be less than or equal to 1"),
        ("CONTEXT_MAX_TOOL_RESULT_SHARE", "half", "must be a number"),
        ("LLM_SEND_PARALLEL_TOOL_CALLS", "perhaps", "must be true or false"),
        (
            "LLM_MAX_TOKENS_FIELD",
            "max_output_tokens",
            "must be 'max_completion_tokens' or 'max_tokens'",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_the_value_and_what_is_allowed(
    environment: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read(environment, **{name: value})
    assert str(caught.value) == f"AGENT_RUNTIME_{name}={value!r}: {allowed}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "must be a JSON object of strings"),
        ("[1]", "must be a JSON object of strings"),
    ],
)
def test_bad_extra_headers_are_named_but_never_shown(
    environment: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read(environment, LLM_EXTRA_HEADERS=value)
    assert str(caught.value).startswith(f"AGENT_RUNTIME_LLM_EXTRA_HEADERS: {problem}")
    assert value not in str(caught.value)


def test_every_bad_variable_is_named_on_one_line(environment: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        read(environment, LLM_MAX_ATTEMPTS="0", LLM_STREAM="maybe", MAX_ITERATIONS="x")
    message = str(caught.value)
    assert "\n" not in message
    for name in ("LLM_MAX_ATTEMPTS", "LLM_STREAM", "MAX_ITERATIONS"):
        assert f"AGENT_RUNTIME_{name}=" in message


def test_serve_flags_win_over_the_environment(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("flag-key=tenant-f\n")
    read(environment, LISTEN="127.0.0.1:1", LLM_MODEL="from-env", LLM_STREAM="true")
    args = _parser().parse_args(
        [
            "serve",
            "--listen=127.0.0.1:2",
            "--database-url=sqlite:///flag.db",
            "--llm-base-url=http://llm/v1",
            "--llm-api-key=sk-flag",
            "--llm-model=from-flag",
            '--llm-extra-headers={"X-A": "b"}',
            "--llm-stream=false",
            "--log-level=warning",
            "--log-format=json",
            "--metrics-listen=127.0.0.1:0",
            f"--api-keys-file={keys}",
            f"--tls-cert-file={tmp_path / 'c.pem'}",
            f"--tls-key-file={tmp_path / 'k.pem'}",
            f"--tls-client-ca-file={tmp_path / 'ca.pem'}",
        ]
    )
    settings = settings_from(args)
    assert settings.server.listen == "127.0.0.1:2"
    assert settings.database.url == "sqlite:///flag.db"
    model = settings.model
    assert (model.base_url, model.api_key.get_secret_value(), model.model) == (
        "http://llm/v1",
        "sk-flag",
        "from-flag",
    )
    assert (model.extra_headers, model.stream) == ({"X-A": "b"}, False)
    observability = settings.observability
    assert (observability.log_level, observability.log_format) == ("WARNING", "json")
    assert observability.metrics_listen == "127.0.0.1:0"
    assert settings.api_keys.by_key == {"flag-key": "tenant-f"}
    assert settings.tls.client_ca_file == str(tmp_path / "ca.pem")


def test_every_serve_flag_names_a_variable() -> None:
    commands = next(a for a in _parser()._actions if a.dest == "command")
    serve: Any = commands.choices["serve"]  # type: ignore[index]
    flags = {a.dest for a in serve._actions if a.option_strings and a.dest != "help"}
    assert {f"AGENT_RUNTIME_{dest.upper()}" for dest in flags} <= set(variables())


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a setting: AGENT_RUNTIME_LLM_MODLE"):
        Settings.from_env({"AGENT_RUNTIME_LLM_MODLE": "qwen"})


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u@db:5432/runtime", "postgresql+asyncpg://u@db:5432/runtime"),
        ("postgres://u@db/runtime", "postgresql+asyncpg://u@db/runtime"),
        ("postgresql+asyncpg://u@db/runtime", "postgresql+asyncpg://u@db/runtime"),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite+aiosqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
    ],
)
def test_database_urls_without_a_driver_get_the_async_one(given: str, used: str) -> None:
    assert normalise_database_url(given).render_as_string(False) == used


def test_model_control_settings_are_read() -> None:
    defaults = Settings.from_env({})
    assert (
        defaults.turns.context_window_tokens,
        defaults.turns.context_max_tool_result_share,
        defaults.model.send_parallel_tool_calls,
        defaults.model.max_tokens_field,
    ) == (100_000, 0.25, True, "max_completion_tokens")
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_CONTEXT_WINDOW_TOKENS": "8000",
            "AGENT_RUNTIME_CONTEXT_MAX_TOOL_RESULT_SHARE": "0.5",
            "AGENT_RUNTIME_LLM_SEND_PARALLEL_TOOL_CALLS": "false",
            "AGENT_RUNTIME_LLM_MAX_TOKENS_FIELD": "MAX_TOKENS",
        }
    )
    assert (
        settings.turns.context_window_tokens,
        settings.turns.context_max_tool_result_share,
        settings.model.send_parallel_tool_calls,
        settings.model.max_tokens_field,
    ) == (8000, 0.5, False, "max_tokens")
