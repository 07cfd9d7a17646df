"""Settings from the environment (AGENT_RUNTIME_*), overridable by `serve` flags."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent_runtime.access_config import (
    AccessConfigError,
    is_loopback,
    merge_api_keys,
    parse_api_keys,
    parse_api_keys_file,
)
from agent_runtime.domain.quotas import TenantQuota
from agent_runtime.infrastructure.db.engine import DEFAULT_DATABASE_URL
from agent_runtime.quota_config import QuotaConfigError, check_quota_tenants, parse_tenant_quotas


class ConfigError(ValueError):
    """A setting has a value the runtime cannot use; the message names the setting."""


# The owner name of a process left unnamed: fine alone, wrong for replicas sharing a database.
DEFAULT_INSTANCE_ID = "local"


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = DEFAULT_DATABASE_URL
    # Connections kept open per process (as many again are opened for bursts): a process
    # holds one per transaction in flight, not one per open stream, as no transaction spans
    # a model call.
    database_pool_size: int = 10
    llm_base_url: str = ""
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = "gpt-4o-mini"
    llm_extra_headers: dict[str, str] = field(default_factory=dict, repr=False)
    llm_stream: bool = True
    llm_connect_timeout: float = 10.0
    llm_first_token_timeout: float = 60.0
    llm_idle_timeout: float = 60.0
    llm_read_timeout: float = 300.0
    llm_max_attempts: int = 3
    llm_max_connections: int = 1000
    llm_retry_base_delay: float = 0.5
    # "aiohttp": httpx requests through aiohttp's connection pool (less CPU per answer);
    # "httpx": httpx's own transport.
    llm_http_transport: str = "aiohttp"
    # One SSE line or event from the model, or a whole non-streamed completion (bytes).
    llm_max_event_bytes: int = 4 * 1024 * 1024
    # One model answer: its text and tool calls together (UTF-8 bytes).
    max_answer_bytes: int = 1024 * 1024
    # One tool call's arguments (UTF-8 bytes); larger ones are refused with a tool error.
    max_tool_argument_bytes: int = 512 * 1024
    # The built-in fake model (no llm_base_url) streams its answers word by word, one word
    # per this many milliseconds, so a person watching sees them arrive; 0: all at once.
    fake_model_word_delay_ms: int = 20
    context_window_messages: int = 200
    max_message_bytes: int = 256 * 1024
    max_iterations: int = 8
    approval_ttl_seconds: float = 600.0
    agents_file: str = ""
    turn_timeout_seconds: float = 900.0
    max_concurrent_streams: int = 2000
    # Names this process as the owner of its turns; each replica on one database needs its
    # own. A restarted process reclaims at once the turns its earlier life left running.
    instance_id: str = DEFAULT_INSTANCE_ID
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    # -- authentication, TLS, transport ---------------------------------------------------
    # API key -> tenant. Empty: development mode (one default tenant, loopback only).
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    # Tenant -> its quotas: the `quota` lines of the API keys file (quota_config.py).
    tenant_quotas: dict[str, TenantQuota] = field(default_factory=dict)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # None: room for the largest allowed message plus its envelope (see grpc_message_limits).
    grpc_max_receive_message_bytes: int | None = None
    grpc_max_send_message_bytes: int | None = None
    grpc_keepalive_time_ms: int = 60_000
    grpc_keepalive_timeout_ms: int = 20_000
    grpc_keepalive_permit_without_calls: bool = True
    grpc_min_ping_interval_ms: int = 10_000
    grpc_max_pings_without_data: int = 0
    grpc_max_concurrent_streams_per_connection: int | None = None
    # Observability (README, "Operations: health, metrics, logs, tracing").
    log_format: str = "text"
    health_check_interval_seconds: float = 5.0
    health_check_timeout_seconds: float = 3.0
    # host:port of the Prometheus /metrics endpoint; "" serves none.
    metrics_listen: str = ""
    # Tracing also turns on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT).
    otel_enabled: bool = False
    # -- cross-replica chunk relay -----------------------------------------------------------
    # nats://host:4222 relays running turns' chunks (deltas too) to followers on other
    # replicas; "" relays nothing (they get committed chunks only). docs/deployment.md.
    nats_url: str = field(default="", repr=False)

    @property
    def uses_fake_model(self) -> bool:
        return not self.llm_base_url

    @property
    def development_mode(self) -> bool:
        return not self.api_keys

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_cert_file)

    def grpc_message_limits(self) -> tuple[int, int]:
        """(receive, send) bytes per gRPC message: at least 4 MiB and twice the content limit,
        unless set explicitly."""
        derived = max(4 * 1024 * 1024, self.max_message_bytes * 2)
        return (
            self.grpc_max_receive_message_bytes or derived,
            self.grpc_max_send_message_bytes or derived,
        )

    def validate(self) -> None:
        """Rules across settings, checked before the server starts (ConfigError names them)."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "AGENT_RUNTIME_TLS_CERT_FILE and AGENT_RUNTIME_TLS_KEY_FILE go together: "
                "set both or neither"
            )
        if self.tls_client_ca_file and not self.uses_tls:
            raise ConfigError(
                "AGENT_RUNTIME_TLS_CLIENT_CA_FILE (mutual TLS) needs "
                "AGENT_RUNTIME_TLS_CERT_FILE and AGENT_RUNTIME_TLS_KEY_FILE"
            )
        if self.development_mode and not is_loopback(self.listen):
            raise ConfigError(
                f"refusing to listen on {self.listen}: no API keys are configured "
                "(AGENT_RUNTIME_API_KEYS or AGENT_RUNTIME_API_KEYS_FILE), and development mode "
                "without authentication serves loopback addresses only (127.0.0.1, ::1, "
                "localhost). Configure API keys to listen on other addresses."
            )
        try:
            check_quota_tenants(self.tenant_quotas, self.api_keys)
        except QuotaConfigError as exc:
            raise ConfigError(f"AGENT_RUNTIME_API_KEYS_FILE: {exc}") from None
        receive, _ = self.grpc_message_limits()
        if receive <= self.max_message_bytes:
            raise ConfigError(
                "AGENT_RUNTIME_GRPC_MAX_RECEIVE_MESSAGE_BYTES must be larger than "
                "AGENT_RUNTIME_MAX_MESSAGE_BYTES (a request carries its content and more)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(f"AGENT_RUNTIME_{name}")
            return value if value not in (None, "") else None

        values: dict[str, Any] = {}
        for name, attr in (
            ("LISTEN", "listen"),
            ("DATABASE_URL", "database_url"),
            ("LLM_BASE_URL", "llm_base_url"),
            ("LLM_API_KEY", "llm_api_key"),
            ("LLM_MODEL", "llm_model"),
            ("LOG_LEVEL", "log_level"),
            ("AGENTS_FILE", "agents_file"),
            ("INSTANCE_ID", "instance_id"),
            ("METRICS_LISTEN", "metrics_listen"),
            ("NATS_URL", "nats_url"),
        ):
            if (value := get(name)) is not None:
                values[attr] = value
        if (raw := get("LLM_EXTRA_HEADERS")) is not None:
            values["llm_extra_headers"] = parse_headers(raw, "AGENT_RUNTIME_LLM_EXTRA_HEADERS")
        if (raw := get("LLM_STREAM")) is not None:
            values["llm_stream"] = _parse_bool(raw, "AGENT_RUNTIME_LLM_STREAM")
        if (raw := get("LLM_HTTP_TRANSPORT")) is not None:
            values["llm_http_transport"] = parse_http_transport(
                raw, "AGENT_RUNTIME_LLM_HTTP_TRANSPORT"
            )
        if (raw := get("FAKE_MODEL_WORD_DELAY_MS")) is not None:
            values["fake_model_word_delay_ms"] = _parse_count(
                raw, "AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS"
            )
        values.update(_access_from_env(get))
        if (raw := get("LOG_FORMAT")) is not None:
            values["log_format"] = parse_log_format(raw, "AGENT_RUNTIME_LOG_FORMAT")
        if (raw := get("OTEL_ENABLED")) is not None:
            values["otel_enabled"] = _parse_bool(raw, "AGENT_RUNTIME_OTEL_ENABLED")
        for name, attr, kind in (
            ("DATABASE_POOL_SIZE", "database_pool_size", int),
            ("LLM_CONNECT_TIMEOUT", "llm_connect_timeout", float),
            ("LLM_FIRST_TOKEN_TIMEOUT", "llm_first_token_timeout", float),
            ("LLM_IDLE_TIMEOUT", "llm_idle_timeout", float),
            ("LLM_READ_TIMEOUT", "llm_read_timeout", float),
            ("LLM_MAX_ATTEMPTS", "llm_max_attempts", int),
            ("LLM_MAX_CONNECTIONS", "llm_max_connections", int),
            ("LLM_RETRY_BASE_DELAY", "llm_retry_base_delay", float),
            ("LLM_MAX_EVENT_BYTES", "llm_max_event_bytes", int),
            ("MAX_ANSWER_BYTES", "max_answer_bytes", int),
            ("MAX_TOOL_ARGUMENT_BYTES", "max_tool_argument_bytes", int),
            ("CONTEXT_WINDOW_MESSAGES", "context_window_messages", int),
            ("MAX_MESSAGE_BYTES", "max_message_bytes", int),
            ("MAX_ITERATIONS", "max_iterations", int),
            ("APPROVAL_TTL_SECONDS", "approval_ttl_seconds", float),
            ("TURN_TIMEOUT_SECONDS", "turn_timeout_seconds", float),
            ("MAX_CONCURRENT_STREAMS", "max_concurrent_streams", int),
            ("LEASE_SECONDS", "lease_seconds", float),
            ("SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds", float),
            ("GRPC_MAX_RECEIVE_MESSAGE_BYTES", "grpc_max_receive_message_bytes", int),
            ("GRPC_MAX_SEND_MESSAGE_BYTES", "grpc_max_send_message_bytes", int),
            ("GRPC_KEEPALIVE_TIME_MS", "grpc_keepalive_time_ms", int),
            ("GRPC_KEEPALIVE_TIMEOUT_MS", "grpc_keepalive_timeout_ms", int),
            ("GRPC_MIN_PING_INTERVAL_MS", "grpc_min_ping_interval_ms", int),
            (
                "GRPC_MAX_CONCURRENT_STREAMS_PER_CONNECTION",
                "grpc_max_concurrent_streams_per_connection",
                int,
            ),
            ("HEALTH_CHECK_INTERVAL_SECONDS", "health_check_interval_seconds", float),
            ("HEALTH_CHECK_TIMEOUT_SECONDS", "health_check_timeout_seconds", float),
        ):
            if (raw := get(name)) is not None:
                values[attr] = _parse_number(raw, kind, f"AGENT_RUNTIME_{name}")
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _access_from_env(get: Callable[[str], str | None]) -> dict[str, Any]:
    """API keys, TLS files and the transport settings that are not plain positive numbers."""
    values: dict[str, Any] = {}
    for name, attr in (
        ("TLS_CERT_FILE", "tls_cert_file"),
        ("TLS_KEY_FILE", "tls_key_file"),
        ("TLS_CLIENT_CA_FILE", "tls_client_ca_file"),
    ):
        if (value := get(name)) is not None:
            values[attr] = value
    inline = get("API_KEYS")
    path = get("API_KEYS_FILE")
    if inline is not None or path is not None:
        try:
            values["api_keys"] = merge_api_keys(
                parse_api_keys(inline, "AGENT_RUNTIME_API_KEYS") if inline else {},
                load_api_keys_file(path, "AGENT_RUNTIME_API_KEYS_FILE") if path else {},
            )
        except AccessConfigError as exc:
            raise ConfigError(str(exc)) from None
        if path is not None:
            values["tenant_quotas"] = load_tenant_quotas_file(path, "AGENT_RUNTIME_API_KEYS_FILE")
    if (raw := get("GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS")) is not None:
        values["grpc_keepalive_permit_without_calls"] = _parse_bool(
            raw, "AGENT_RUNTIME_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS"
        )
    if (raw := get("GRPC_MAX_PINGS_WITHOUT_DATA")) is not None:
        values["grpc_max_pings_without_data"] = _parse_count(
            raw, "AGENT_RUNTIME_GRPC_MAX_PINGS_WITHOUT_DATA"
        )
    return values


def load_api_keys_file(path: str, setting: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc}") from None
    try:
        return parse_api_keys_file(text, setting)
    except AccessConfigError as exc:
        raise ConfigError(f"{exc} (file {path})") from None


def load_tenant_quotas_file(path: str, setting: str) -> dict[str, TenantQuota]:
    """The `quota` lines of the API keys file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc}") from None
    try:
        return parse_tenant_quotas(text, setting)
    except QuotaConfigError as exc:
        raise ConfigError(f"{exc} (file {path})") from None


def _parse_count(raw: str, setting: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{setting} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{setting} must be 0 or more, not {raw!r}")
    return value


def parse_headers(raw: str, setting: str) -> dict[str, str]:
    try:
        headers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{setting} is not valid JSON: {exc.msg}") from exc
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f'{setting} must be a JSON object of strings, e.g. {{"X-Team": "a"}}')
    return headers


def parse_log_format(raw: str, setting: str) -> str:
    lowered = raw.strip().lower()
    if lowered not in ("text", "json"):
        raise ConfigError(f"{setting} must be text or json, not {raw!r}")
    return lowered


def parse_http_transport(raw: str, setting: str) -> str:
    lowered = raw.strip().lower()
    if lowered not in ("aiohttp", "httpx"):
        raise ConfigError(f"{setting} must be aiohttp or httpx, not {raw!r}")
    return lowered


def _parse_bool(raw: str, setting: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{setting} must be true or false, not {raw!r}")


def _parse_number(raw: str, kind: type[int] | type[float], setting: str) -> int | float:
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting} must be a number, not {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{setting} must be positive, not {raw!r}")
    return value
