"""The built-in deterministic fake model, used when no LLM endpoint is configured.

It lets a new user see every chunk type from grpcurl without any model at hand:
  /tool NAME {json}   -> a tool call to NAME with those arguments (JSON optional), the
                         arguments streamed in pieces of up to 16 characters first
  /think TEXT         -> TEXT streamed word by word as reasoning, then an echo of it
  /error              -> streams a few tokens, then fails like a broken endpoint
  anything else       -> an answer that echoes the message, streamed word by word, and
                         what the request set: its generation settings, the client's tools
After a tool result (or a rejection) it answers with what the tool returned, so a tool
call always ends in a final answer. Its words come one at a time, `word_delay_seconds` apart
(AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS), as a real model's tokens do.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator

from agent_runtime.application.ports import ChatRequest
from agent_runtime.domain.errors import ModelUnavailable
from agent_runtime.domain.model import Role, Usage
from agent_runtime.domain.model_output import (
    ModelEvent,
    ModelResponse,
    ReasoningText,
    RequestedToolCall,
    TextDelta,
    ToolCallFragment,
)

FAKE_MODEL_NAME = "builtin-fake-model"

_TOOL_COMMAND = re.compile(r"^/tool\s+(?P<name>[A-Za-z_][\w-]*)\s*(?P<args>.*)$", re.DOTALL)
_THINK_COMMAND = re.compile(r"^/think\s+(?P<thought>.+)$", re.DOTALL)
_FRAGMENT_CHARS = 16  # a tool call's arguments stream in pieces this long

# Arguments used when "/tool NAME" comes without JSON, so each catalogue tool can be tried.
_EXAMPLE_ARGUMENTS: dict[str, dict[str, object]] = {
    "read_file": {"path": "README.md"},
    "write_file": {"path": "notes.md", "content": "written by the fake model\n"},
    "list_files": {"path": ".", "recursive": False},
    "create_directory": {"path": "new_dir"},
    "delete_file": {"path": "notes.md"},
    "move_file": {"source": "notes.md", "destination": "notes-old.md"},
    "execute_command": {"command": "ls -la"},
    "search_in_code": {"query": "TODO"},
    "attempt_completion": {"result": "done"},
    "ask_followup_question": {"question": "Which file do you mean?"},
}


class FakeModelClient:
    """Implements the LLMClient port without any network."""

    def __init__(self, word_delay_seconds: float = 0.0) -> None:
        self._word_delay = word_delay_seconds

    async def stream_chat(self, request: ChatRequest) -> AsyncGenerator[ModelEvent, None]:
        history = request.history
        prompt_tokens = sum(len(m.content.split()) for m in history)
        if history and history[-1].role is Role.TOOL:
            result = history[-1].content
            excerpt = result if len(result) <= 200 else result[:200] + "..."
            async for event in self._stream_text(f"The tool returned: {excerpt}", prompt_tokens):
                yield event
            return

        last = next((m for m in reversed(history) if m.role is Role.USER), None)
        prompt = last.content.strip() if last else ""
        command = _TOOL_COMMAND.match(prompt)
        if command:
            name = command.group("name")
            raw = command.group("args").strip()
            arguments = raw if raw else json.dumps(_EXAMPLE_ARGUMENTS.get(name, {}))
            call_id = f"call_fake_{last.position if last else 0}"
            for start in range(0, len(arguments), _FRAGMENT_CHARS):
                await self._pause()
                piece = arguments[start : start + _FRAGMENT_CHARS]
                yield ToolCallFragment(call_id, name, piece)
            yield ModelResponse(
                "",
                (RequestedToolCall(call_id, name, arguments),),
                Usage(prompt_tokens, 1),
                "tool_calls",
            )
            return

        thinking = _THINK_COMMAND.match(prompt)
        if thinking:
            thought = thinking.group("thought")
            for word in _words(thought):
                await self._pause()
                yield ReasoningText(word)
            answer = f"I thought about it: {thought}"
            async for event in self._stream_text(answer, prompt_tokens, reasoning=thought):
                yield event
            return

        if prompt == "/error":
            for word in _words("Starting an answer"):
                await self._pause()
                yield TextDelta(word)
            raise ModelUnavailable(
                "the fake model failed on purpose (/error)", reason="MODEL_STREAM_INTERRUPTED"
            )

        answer = f"This is the built-in fake model (no LLM configured). You said: {prompt}"
        answer += _what_was_set(request)
        async for event in self._stream_text(answer, prompt_tokens):
            yield event

    async def _stream_text(
        self, answer: str, prompt_tokens: int, *, reasoning: str = ""
    ) -> AsyncGenerator[ModelEvent, None]:
        words = _words(answer)
        for word in words:
            await self._pause()
            yield TextDelta(word)
        yield ModelResponse(
            answer, (), Usage(prompt_tokens, len(words)), "stop", reasoning=reasoning
        )

    async def _pause(self) -> None:
        """The time the model takes for a word."""
        if self._word_delay > 0:
            await asyncio.sleep(self._word_delay)


def _what_was_set(request: ChatRequest) -> str:
    """The request's generation settings and the client's tools, so a client sees they
    arrived (nothing when there are none)."""
    said = ""
    settings = request.generation.to_dict()
    if settings:
        said += f" [generation: {json.dumps(settings, sort_keys=True)}]"
    declared = [tool.name for tool in request.tools if tool.declared]
    if declared:
        said += f" [client tools: {', '.join(declared)}]"
    return said


def _words(text: str) -> list[str]:
    """The text's words, each with the spaces after it."""
    return re.findall(r"\S+\s*", text)
