"""The model endpoint's settings, and the model client they make.

Plain pydantic models: config.py reads ModelEndpoint from AGENT_RUNTIME_LLM_<FIELD>,
AnswerSizes from AGENT_RUNTIME_<FIELD> and FakeModelSettings from
AGENT_RUNTIME_FAKE_MODEL_<FIELD>, so a field's name is the rest of its variable's name.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
)

from agent_runtime.application.ports import LLMClient
from agent_runtime.infrastructure.llm.chat_request_body import MaxTokensField
from agent_runtime.infrastructure.llm.fake_model import FAKE_MODEL_NAME, FakeModelClient
from agent_runtime.infrastructure.llm.http_client import HttpTransport, create_http_client
from agent_runtime.infrastructure.llm.openai_compatible import OpenAICompatibleClient
from agent_runtime.infrastructure.llm.resilience import ModelTimeouts, RetryPolicy
from agent_runtime.infrastructure.llm.untrusted_output import AnswerLimits

log = logging.getLogger("agent_runtime")


def _headers(value: Any) -> Any:
    """A JSON object of strings (text, from the environment, is decoded first)."""
    example = '{"X-Team": "a"}'
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not valid JSON ({exc.msg}); give an object, e.g. {example}"
            ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"must be a JSON object of strings, e.g. {example}")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ModelEndpoint(BaseModel):
    """An OpenAI-compatible chat-completions endpoint; no base_url: the built-in fake model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    model: str = "gpt-4o-mini"
    # Extra request headers (a proxy's credentials, say): never shown.
    extra_headers: Annotated[dict[str, str], BeforeValidator(_headers)] = Field(
        default_factory=dict, repr=False
    )
    stream: bool = True
    connect_timeout: Seconds = 10.0
    first_token_timeout: Seconds = 60.0
    idle_timeout: Seconds = 60.0
    # A backstop only: the first-token and idle timeouts are the real bounds.
    read_timeout: Seconds = 300.0
    max_attempts: PositiveInt = 3
    max_connections: PositiveInt = 1000
    retry_base_delay: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    # "aiohttp": httpx requests through aiohttp's connection pool (less CPU per answer);
    # "httpx": httpx's own transport.
    http_transport: Annotated[HttpTransport, BeforeValidator(_lower)] = "aiohttp"
    # One SSE line or event from the model, or a whole non-streamed completion (bytes).
    max_event_bytes: PositiveInt = 4 * 1024 * 1024
    # Send `parallel_tool_calls: false` with the tools (the runtime runs one at a time);
    # false for endpoints that reject the field.
    send_parallel_tool_calls: bool = True
    # Where the output token limit (GenerationConfig.max_output_tokens) goes in the request:
    # "max_completion_tokens" (OpenAI) or "max_tokens" (llama.cpp, Ollama, older servers).
    max_tokens_field: Annotated[MaxTokensField, BeforeValidator(_lower)] = "max_completion_tokens"

    @property
    def is_fake(self) -> bool:
        return not self.base_url


class AnswerSizes(BaseModel):
    """How much of a model's answer is kept (UTF-8 bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Its text and tool calls together.
    max_answer_bytes: PositiveInt = 1024 * 1024
    # One tool call's arguments; larger ones are refused with a tool error.
    max_tool_argument_bytes: PositiveInt = 512 * 1024


class FakeModelSettings(BaseModel):
    """The built-in fake model (no base_url) streams its answers word by word, one word per
    `word_delay_ms`, so a person watching sees them arrive; 0: all at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    word_delay_ms: NonNegativeInt = 20


def open_model_client(
    endpoint: ModelEndpoint, sizes: AnswerSizes, fake: FakeModelSettings
) -> tuple[httpx.AsyncClient | None, LLMClient, str]:
    """The model client, the HTTP client it talks through (the caller closes it) and the name
    of the model a request gets when it names none. ValueError for a proxy in the environment
    that the client cannot use."""
    if endpoint.is_fake:
        log.warning(
            "no AGENT_RUNTIME_LLM_BASE_URL set: using the built-in deterministic fake "
            "model (%s), not a real LLM",
            FAKE_MODEL_NAME,
        )
        return None, FakeModelClient(fake.word_delay_ms / 1000), FAKE_MODEL_NAME
    http = create_http_client(
        endpoint.base_url,
        transport=endpoint.http_transport,
        connect_timeout=endpoint.connect_timeout,
        max_connections=endpoint.max_connections,
        read_timeout=max(
            endpoint.read_timeout, endpoint.first_token_timeout, endpoint.idle_timeout
        ),
    )
    llm = OpenAICompatibleClient(
        http,
        base_url=endpoint.base_url,
        model=endpoint.model,
        api_key=endpoint.api_key.get_secret_value(),
        extra_headers=endpoint.extra_headers,
        stream=endpoint.stream,
        retry=RetryPolicy(max_attempts=endpoint.max_attempts, base_delay=endpoint.retry_base_delay),
        timeouts=ModelTimeouts(
            connect=endpoint.connect_timeout,
            first_token=endpoint.first_token_timeout,
            idle=endpoint.idle_timeout,
        ),
        limits=AnswerLimits(
            answer=sizes.max_answer_bytes,
            tool_arguments=sizes.max_tool_argument_bytes,
            event=endpoint.max_event_bytes,
        ),
        parallel_tool_calls_field=endpoint.send_parallel_tool_calls,
        max_tokens_field=endpoint.max_tokens_field,
    )
    log.info(
        "model endpoint %s, model %s (HTTP transport %s)",
        endpoint.base_url,
        endpoint.model,
        endpoint.http_transport,
    )
    return http, llm, endpoint.model
