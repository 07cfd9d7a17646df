"""ChatRequestBody: a ChatRequest as the JSON body of `POST /chat/completions`, the
OpenAI chat-completions request that OpenAICompatibleClient sends."""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.infrastructure import json_codec

# Where the output token limit goes: OpenAI's current name, or the older one that llama.cpp,
# Ollama and other local servers read (AGENT_RUNTIME_LLM_MAX_TOKENS_FIELD).
MaxTokensField = Literal["max_completion_tokens", "max_tokens"]
MAX_TOKENS_FIELDS: tuple[MaxTokensField, ...] = get_args(MaxTokensField)


class ChatRequestBody:
    """Encodes requests for one endpoint's settings: its default model, whether it streams,
    whether it takes `parallel_tool_calls`, and where the output token limit goes."""

    def __init__(
        self,
        *,
        model: str,
        stream: bool = True,
        parallel_tool_calls_field: bool = True,
        max_tokens_field: str = "max_completion_tokens",
    ) -> None:
        if max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(f"max_tokens_field must be one of {MAX_TOKENS_FIELDS}")
        self._model = model
        self._stream = stream
        # The runtime runs one tool at a time: `parallel_tool_calls: false` asks the model for
        # one call, unless the endpoint rejects the field.
        self._parallel_tool_calls_field = parallel_tool_calls_field
        self._max_tokens_field = max_tokens_field
        self._tool_json = _ToolJson()

    def encode(self, request: ChatRequest) -> bytes:
        messages: list[dict[str, Any]] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages.extend(_wire_message(message) for message in request.history)
        body: dict[str, Any] = {"model": request.model or self._model, "messages": messages}
        self._add_generation(body, request.generation)
        if self._stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body["stream"] = False
        if request.tools:
            choice = request.generation.tool_choice
            if choice is not None:
                body["tool_choice"] = (
                    {"type": "function", "function": {"name": choice.tool_name}}
                    if choice.mode is ToolChoiceMode.TOOL
                    else choice.mode.value
                )
            if self._parallel_tool_calls_field:
                body["parallel_tool_calls"] = False
        encoded = json_codec.dumps(body)
        if request.tools:  # the same every turn, and most of the body: encoded once each
            tools = ", ".join(self._tool_json.encoded(tool) for tool in request.tools)
            encoded = f'{encoded[:-1]},"tools":[{tools}]}}'
        return encoded.encode()

    def _add_generation(self, body: dict[str, Any], generation: GenerationConfig) -> None:
        """The generation settings that are set, under their OpenAI names."""
        if generation.is_empty:
            return
        if generation.temperature is not None:
            body["temperature"] = generation.temperature
        if generation.top_p is not None:
            body["top_p"] = generation.top_p
        if generation.max_output_tokens is not None:
            body[self._max_tokens_field] = generation.max_output_tokens
        if generation.stop:
            body["stop"] = list(generation.stop)
        if generation.seed is not None:
            body["seed"] = generation.seed
        if generation.reasoning_effort:
            body["reasoning_effort"] = generation.reasoning_effort


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        # The chat format has no error flag on tool results: say it in the text.
        content = f"ERROR: {message.content}" if message.is_error else message.content
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
    if message.role is Role.ASSISTANT and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.tool_name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role.value, "content": message.content}


class _ToolJson:
    """Each built-in tool definition's JSON, encoded once. Keyed by identity: those
    definitions live as long as the process (the catalogue), and the entry holds its
    definition, so an id cannot be reused while its entry is cached. A client-declared tool
    is a new definition every turn (read from the session's row or the request): it is
    encoded for its request only, never kept."""

    _LIMIT = 1024  # distinct definitions cached at most (more would be a bug elsewhere)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[ToolDefinition, str]] = {}

    def encoded(self, tool: ToolDefinition) -> str:
        if tool.declared:
            return _encoded(tool)
        entry = self._cache.get(id(tool))
        if entry is None or entry[0] is not tool:
            if len(self._cache) >= self._LIMIT:
                self._cache.clear()
            entry = self._cache[id(tool)] = (tool, _encoded(tool))
        return entry[1]


def _encoded(tool: ToolDefinition) -> str:
    return json.dumps(_wire_tool(tool), ensure_ascii=False)


def _wire_tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }
