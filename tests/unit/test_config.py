import pytest

from agent_runtime.config import ConfigError, Settings
from agent_runtime.infrastructure.db.engine import normalise_database_url


def test_defaults_run_anywhere() -> None:
    settings = Settings.from_env({})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url == "sqlite+aiosqlite:///./data/agent_runtime.db"
    assert settings.uses_fake_model


def test_environment_is_read() -> None:
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_LISTEN": "0.0.0.0:6000",
            "AGENT_RUNTIME_LLM_BASE_URL": "http://llm:4000/v1",
            "AGENT_RUNTIME_LLM_API_KEY": "sk-secret",
            "AGENT_RUNTIME_LLM_MODEL": "qwen",
            "AGENT_RUNTIME_LLM_EXTRA_HEADERS": '{"X-Team": "infra"}',
            "AGENT_RUNTIME_LLM_STREAM": "false",
            "AGENT_RUNTIME_CONTEXT_WINDOW_MESSAGES": "50",
        }
    )
    assert (settings.listen, settings.llm_model, settings.llm_stream) == (
        "0.0.0.0:6000",
        "qwen",
        False,
    )
    assert settings.llm_extra_headers == {"X-Team": "infra"}
    assert settings.context_window_messages == 50
    assert not settings.uses_fake_model
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "mentions"),
    [
        ("AGENT_RUNTIME_LLM_EXTRA_HEADERS", "{not json", "not valid JSON"),
        ("AGENT_RUNTIME_LLM_EXTRA_HEADERS", '{"a": 1}', "JSON object of strings"),
        ("AGENT_RUNTIME_LLM_STREAM", "maybe", "true or false"),
        ("AGENT_RUNTIME_MAX_MESSAGE_BYTES", "lots", "must be a number"),
        ("AGENT_RUNTIME_CONTEXT_WINDOW_MESSAGES", "0", "must be positive"),
        ("AGENT_RUNTIME_LOG_FORMAT", "xml", "text or json"),
        ("AGENT_RUNTIME_OTEL_ENABLED", "sometimes", "true or false"),
        ("AGENT_RUNTIME_HEALTH_CHECK_INTERVAL_SECONDS", "0", "must be positive"),
        ("AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS", "-1", "0 or more"),
        ("AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS", "2.5", "whole number"),
        ("AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS", "slow", "whole number"),
        ("AGENT_RUNTIME_CONTEXT_WINDOW_TOKENS", "0", "must be positive"),
        ("AGENT_RUNTIME_CONTEXT_MAX_TOOL_RESULT_SHARE", "1.5", "above 0 and at most 1"),
        ("AGENT_RUNTIME_CONTEXT_MAX_TOOL_RESULT_SHARE", "half", "must be a number"),
        ("AGENT_RUNTIME_LLM_SEND_PARALLEL_TOOL_CALLS", "perhaps", "true or false"),
        ("AGENT_RUNTIME_LLM_MAX_TOKENS_FIELD", "max_output_tokens", "max_completion_tokens or"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, mentions: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value) and mentions in str(caught.value)


def test_model_client_settings_are_read() -> None:
    defaults = Settings.from_env({})
    assert (
        defaults.llm_http_transport,
        defaults.max_answer_bytes,
        defaults.max_tool_argument_bytes,
        defaults.llm_max_event_bytes,
    ) == ("aiohttp", 1024 * 1024, 512 * 1024, 4 * 1024 * 1024)
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_LLM_HTTP_TRANSPORT": " HTTPX ",
            "AGENT_RUNTIME_MAX_ANSWER_BYTES": "2000",
            "AGENT_RUNTIME_MAX_TOOL_ARGUMENT_BYTES": "1000",
            "AGENT_RUNTIME_LLM_MAX_EVENT_BYTES": "8000",
        }
    )
    assert (
        settings.llm_http_transport,
        settings.max_answer_bytes,
        settings.max_tool_argument_bytes,
        settings.llm_max_event_bytes,
    ) == ("httpx", 2000, 1000, 8000)
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_LLM_HTTP_TRANSPORT must be aiohttp or"):
        Settings.from_env({"AGENT_RUNTIME_LLM_HTTP_TRANSPORT": "requests"})
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_MAX_ANSWER_BYTES must be positive"):
        Settings.from_env({"AGENT_RUNTIME_MAX_ANSWER_BYTES": "0"})


def test_the_fake_models_word_delay_is_read_and_may_be_zero() -> None:
    assert Settings.from_env({}).fake_model_word_delay_ms == 20
    for raw, delay in (("0", 0), ("150", 150)):
        env = {"AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS": raw}
        assert Settings.from_env(env).fake_model_word_delay_ms == delay


def test_database_pool_size_is_read() -> None:
    settings = Settings.from_env({"AGENT_RUNTIME_DATABASE_POOL_SIZE": "25"})
    assert settings.database_pool_size == 25
    with pytest.raises(ConfigError, match="AGENT_RUNTIME_DATABASE_POOL_SIZE"):
        Settings.from_env({"AGENT_RUNTIME_DATABASE_POOL_SIZE": "0"})


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


def test_observability_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.log_format, defaults.metrics_listen, defaults.otel_enabled) == (
        "text",
        "",
        False,
    )
    assert defaults.health_check_interval_seconds == 5.0
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_LOG_FORMAT": "JSON",
            "AGENT_RUNTIME_METRICS_LISTEN": "0.0.0.0:9464",
            "AGENT_RUNTIME_OTEL_ENABLED": "true",
            "AGENT_RUNTIME_HEALTH_CHECK_INTERVAL_SECONDS": "2.5",
            "AGENT_RUNTIME_HEALTH_CHECK_TIMEOUT_SECONDS": "1",
        }
    )
    assert (settings.log_format, settings.metrics_listen, settings.otel_enabled) == (
        "json",
        "0.0.0.0:9464",
        True,
    )
    assert settings.health_check_interval_seconds == 2.5
    assert settings.health_check_timeout_seconds == 1.0


def test_model_control_settings_are_read() -> None:
    defaults = Settings.from_env({})
    assert (
        defaults.context_window_tokens,
        defaults.context_max_tool_result_share,
        defaults.llm_send_parallel_tool_calls,
        defaults.llm_max_tokens_field,
    ) == (100_000, 0.25, True, "max_completion_tokens")
    settings = Settings.from_env(
        {
            "AGENT_RUNTIME_CONTEXT_WINDOW_TOKENS": "8000",
            "AGENT_RUNTIME_CONTEXT_MAX_TOOL_RESULT_SHARE": "0.5",
            "AGENT_RUNTIME_LLM_SEND_PARALLEL_TOOL_CALLS": "false",
            "AGENT_RUNTIME_LLM_MAX_TOKENS_FIELD": "max_tokens",
        }
    )
    assert (
        settings.context_window_tokens,
        settings.context_max_tool_result_share,
        settings.llm_send_parallel_tool_calls,
        settings.llm_max_tokens_field,
    ) == (8000, 0.5, False, "max_tokens")
