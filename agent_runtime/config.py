"""Settings: one model per concern, read from the AGENT_RUNTIME_* variables (README,
Configuration), overridable by `serve` flags.

Each concern's model is plain pydantic, defined next to the component that takes it (the
application, api and infrastructure layers must not depend on how the process is configured),
and is handed to that component as it is. Only this module knows the variables: a concern's
are AGENT_RUNTIME_ + its prefix + each field's name (environment.Env). So there is no table
of names to keep in step, and tests/unit/test_config.py checks the README's table against
the models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator
from pydantic.fields import FieldInfo

from agent_runtime.access_config import ApiKeySettings, is_loopback
from agent_runtime.api.server import DEFAULT_MAX_CONCURRENT_STREAMS
from agent_runtime.api.transport import TlsFiles, Transport
from agent_runtime.application.turn_settings import TurnSettings
from agent_runtime.environment import ConfigError, Env
from agent_runtime.infrastructure.db.engine import DEFAULT_DATABASE_URL, is_in_memory_sqlite
from agent_runtime.infrastructure.llm.endpoint import AnswerSizes, FakeModelSettings, ModelEndpoint
from agent_runtime.infrastructure.observability.settings import ObservabilitySettings

__all__ = ["ConfigError", "DatabaseSettings", "ServerSettings", "Settings", "concerns", "variables"]


class ServerSettings(BaseModel):
    """This process as a server: where it listens, how many streams it carries, whether its
    schema is public, how it stops, which agents it serves and where it relays chunks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:50051"
    # Open streaming calls at most; one more gets RESOURCE_EXHAUSTED.
    max_concurrent_streams: PositiveInt = DEFAULT_MAX_CONCURRENT_STREAMS
    # Open streaming calls at most per tenant (None: the process limit alone).
    max_streams_per_tenant: PositiveInt | None = None
    # The reflection service (grpcurl list/describe); off keeps the schema private.
    reflection: bool = True
    # On SIGTERM/SIGINT, how long running calls may finish.
    shutdown_grace_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    agents_file: str | None = None
    # nats://host:4222 relays running turns' chunks to followers on other replicas.
    nats_url: str | None = Field(default=None, repr=False)


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # May hold a password: never shown.
    url: str = Field(default=DEFAULT_DATABASE_URL, repr=False)

    @field_validator("url")
    @classmethod
    def _a_file_not_memory(cls, url: str) -> str:
        if is_in_memory_sqlite(url):
            # The writer and the readers open connections of their own: each would see
            # another, empty, database.
            raise ValueError("must name a SQLite file (or PostgreSQL), not an in-memory database")
        return url

    # Connections kept open per process (as many again for bursts): one per transaction in
    # flight, not per open stream, as no transaction spans a model call.
    pool_size: PositiveInt = 10


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    server: Annotated[ServerSettings, Env("")] = ServerSettings()
    database: Annotated[DatabaseSettings, Env("DATABASE_")] = DatabaseSettings()
    model: Annotated[ModelEndpoint, Env("LLM_")] = ModelEndpoint()
    answers: Annotated[AnswerSizes, Env("")] = AnswerSizes()
    fake_model: Annotated[FakeModelSettings, Env("FAKE_MODEL_")] = FakeModelSettings()
    turns: Annotated[TurnSettings, Env("")] = TurnSettings()
    api_keys: Annotated[ApiKeySettings, Env("API_", empty_is_error=True)] = ApiKeySettings()
    tls: Annotated[TlsFiles, Env("TLS_", empty_is_error=True)] = TlsFiles()
    transport: Annotated[Transport, Env("GRPC_")] = Transport()
    observability: Annotated[ObservabilitySettings, Env("")] = ObservabilitySettings()

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None) -> Settings:
        """Every concern from the environment; `overrides` (variables by name: the `serve`
        flags) win over it. ConfigError names the variables that are wrong; the rules across
        them are check()'s, which `serve` applies (`migrate` needs no server rules)."""
        given = dict(overrides or {})
        if unknown := set(given) - set(variables()):
            raise ConfigError(f"not a setting: {', '.join(sorted(unknown))}")
        read, problems = {}, []
        for name, model, env in concerns():
            try:
                read[name] = env.read(model, given)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems)) from None
        return cls.model_validate(read)

    @property
    def grpc_transport(self) -> Transport:
        return self.transport.with_room_for(self.turns.max_message_bytes)

    def check(self) -> None:
        """Rules across settings, checked before the server starts (ConfigError names them)."""
        tls = self.tls
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError(
                "AGENT_RUNTIME_TLS_CERT_FILE and AGENT_RUNTIME_TLS_KEY_FILE go together: "
                "set both or neither"
            )
        if tls.client_ca_file is not None and not tls.enabled:
            raise ConfigError(
                "AGENT_RUNTIME_TLS_CLIENT_CA_FILE (mutual TLS) needs "
                "AGENT_RUNTIME_TLS_CERT_FILE and AGENT_RUNTIME_TLS_KEY_FILE"
            )
        listen = self.server.listen
        if self.api_keys.development_mode and not is_loopback(listen):
            raise ConfigError(
                f"refusing to listen on {listen}: no API keys are configured "
                "(AGENT_RUNTIME_API_KEYS or AGENT_RUNTIME_API_KEYS_FILE), and development mode "
                "without authentication serves loopback addresses only (127.0.0.1, ::1, "
                "localhost). Configure API keys to listen on other addresses."
            )
        receive = self.grpc_transport.max_receive_message_bytes
        if receive is not None and receive <= self.turns.max_message_bytes:
            raise ConfigError(
                "AGENT_RUNTIME_GRPC_MAX_RECEIVE_MESSAGE_BYTES must be larger than "
                "AGENT_RUNTIME_MAX_MESSAGE_BYTES (a request carries its content and more)"
            )


def concerns() -> Iterator[tuple[str, type[BaseModel], Env]]:
    """(field of Settings, its model, how it is read), for every concern."""
    for name, field in Settings.model_fields.items():
        [env] = [m for m in field.metadata if isinstance(m, Env)]
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        yield name, field.annotation, env


def variables() -> dict[str, FieldInfo]:
    """Every AGENT_RUNTIME_* variable, with the model field it sets."""
    return {
        env.variable(field): info
        for _, model, env in concerns()
        for field, info in model.model_fields.items()
    }
