"""One model answer, assembled from chat-completion stream chunks (or a whole completion).

Everything in it came from the model: it is checked and repaired as untrusted input on the
way in (untrusted_output.py), so the ModelResponse it gives holds only what can be stored.
Its tool calls are assembled by tool_call_assembly.py.
"""

from __future__ import annotations

from typing import Any

from agent_runtime.domain.errors import (
    ModelProtocolError,
    ModelUnavailable,
)
from agent_runtime.domain.model import Usage
from agent_runtime.domain.model_output import (
    ModelResponse,
    ReasoningText,
    StreamedOutput,
    TextDelta,
    ToolCallFragment,
)
from agent_runtime.domain.text import well_formed
from agent_runtime.infrastructure import json_codec
from agent_runtime.infrastructure.llm.endpoint_errors import Redactor, excerpt, payload_error
from agent_runtime.infrastructure.llm.sse import SSEEvent, SSEEventTooLarge, SSEParser
from agent_runtime.infrastructure.llm.tool_call_assembly import PartialCall, ToolCallAssembly
from agent_runtime.infrastructure.llm.untrusted_output import (
    AnswerLimits,
    StreamedText,
    answer_too_large,
    token_count,
    utf8_size,
)

_FINISH_REASON_CHARS = 64
# Where reasoning models (DeepSeek-R1 on vLLM, OpenRouter, LiteLLM...) stream their thinking.
# It is not part of the answer, but it shows the model is working: it stops the first-token
# clock, and it is streamed (ReasoningText).
_REASONING_KEYS = ("reasoning_content", "reasoning")


# What was received since the last take, in order: (kind, its call, its text pieces). Pieces
# of one kind (and call) in a row leave as one event.
_Output = tuple[type[StreamedOutput], PartialCall | None, list[str]]


class Answer:
    """Accumulates one answer from stream chunks (or a whole completion)."""

    def __init__(self, redact: Redactor, limits: AnswerLimits) -> None:
        self._redact = redact
        self._limits = limits
        self._parser = SSEParser(max_chars=limits.event)
        self._text: list[str] = []
        self._streamed_text = StreamedText()
        self._reasoning: list[str] = []
        self._streamed_reasoning = StreamedText()
        self._bytes = 0  # of the text, the reasoning and the tool calls so far
        self._calls = ToolCallAssembly(limits, redact, self._grow, self._emit)
        self._out: list[_Output] = []
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self.done = False  # [DONE] received
        self.events = 0  # data events received (SSE comments are not events)
        # The model has produced something: text, a tool call or reasoning. From then on the
        # answer is under way, and a failure is not worth a retry.
        self.output_started = False

    def feed(self, chunk: bytes) -> list[StreamedOutput]:
        """Consume received bytes; return what they completed (text, reasoning, the first
        tool call's arguments), pieces of one kind in a row joined."""
        try:
            events = self._parser.feed(chunk)
        except SSEEventTooLarge as exc:
            raise answer_too_large(
                f"the model endpoint sent a stream line or event larger than the "
                f"{self._limits.event}-byte limit (AGENT_RUNTIME_LLM_MAX_EVENT_BYTES)"
            ) from exc
        self._apply_events(events)
        return self._take()

    def flush(self) -> list[StreamedOutput]:
        """The body has ended: what was still pending."""
        self._apply_events(self._parser.flush())
        self._end_streams()
        return self._take()

    def parse_completion(self, raw: bytes) -> None:
        payload = self._load(raw, "the response")
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ModelProtocolError("the model endpoint answered a completion without choices")
        if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
            raise ModelProtocolError("the model endpoint answered a choice without a message")
        self._apply_chunk(payload, message_key="message")
        self._end_streams()
        self._out.clear()  # a whole completion streams nothing: result() holds it all
        self.done = True
        self.output_started = True

    def result(self) -> ModelResponse:
        if not self.done and self._finish_reason is None:
            raise ModelUnavailable(
                "the model stream ended before the answer was complete",
                reason="MODEL_STREAM_TRUNCATED",
            )
        self._end_streams()
        return ModelResponse(
            content="".join(self._text),
            tool_calls=self._calls.finished(),
            usage=self._usage,
            finish_reason=self._finish_reason,
            reasoning="".join(self._reasoning),
        )

    def _apply_events(self, events: list[SSEEvent]) -> None:
        for event in events:
            if self.done:
                break  # anything after [DONE] is not part of the answer
            self.events += 1
            if event.data.strip() == "[DONE]":
                self.done = True
                self._end_streams()
                continue
            payload = self._load(event.data, "a stream event")
            self._apply_chunk(payload, message_key="delta")

    def _emit(self, kind: type[StreamedOutput], text: str, call: PartialCall | None = None) -> None:
        out = self._out
        if out and out[-1][0] is kind and out[-1][1] is call:
            out[-1][2].append(text)
        else:
            out.append((kind, call, [text]))

    def _take(self) -> list[StreamedOutput]:
        """What was received since the last take, as events."""
        if not self._out:
            return []
        taken: list[StreamedOutput] = []
        for kind, call, parts in self._out:
            text = parts[0] if len(parts) == 1 else "".join(parts)
            if kind is TextDelta:
                taken.append(TextDelta(text))
            elif kind is ReasoningText:
                taken.append(ReasoningText(text))
            elif call is not None:
                taken.append(ToolCallFragment(call.call_id, call.name, text))
        self._out = []
        return taken

    def _load(self, data: str | bytes, what: str) -> dict[str, Any]:
        try:
            payload = json_codec.loads(data)
        except (ValueError, RecursionError) as exc:
            shown = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            problem = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
            raise ModelProtocolError(
                f"{what} from the model endpoint is {problem}: {excerpt(shown, self._redact, 200)}"
            ) from exc
        if not isinstance(payload, dict):
            raise ModelProtocolError(f"{what} from the model endpoint is not a JSON object")
        if payload.get("error") is not None:
            raise payload_error(payload["error"], self._redact)
        return payload

    def _apply_chunk(self, payload: dict[str, Any], *, message_key: str) -> str:
        usage = _usage(payload.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = payload.get("choices")
        # The usage chunk comes with empty choices; other chunks may carry none either.
        if not isinstance(choices, list) or not choices:
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ModelProtocolError("a choice from the model endpoint is not a JSON object")
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self._finish_reason = well_formed(finish_reason[:_FINISH_REASON_CHARS])
        message = choice.get(message_key)
        if not isinstance(message, dict):
            return ""
        tool_calls = message.get("tool_calls")
        if tool_calls:
            self.output_started = True
        for key in _REASONING_KEYS:
            reasoning = message.get(key)
            if reasoning:
                self.output_started = True
                if isinstance(reasoning, str):
                    self._add_reasoning(self._streamed_reasoning.add(reasoning))
                break  # a server sending both sends the same text twice
        if isinstance(tool_calls, list):
            for position, fragment in enumerate(tool_calls):
                # A whole completion lists its calls without "index": their order is the index.
                self._calls.add(fragment, position if message_key == "message" else None)
        received = _content_text(message.get("content"))
        if not received:
            return ""
        self.output_started = True
        return self._add_text(self._streamed_text.add(received))

    def _add_text(self, text: str) -> str:
        if text:  # once per stream event: the common case (ASCII) costs no call
            self._bytes += len(text) if text.isascii() else utf8_size(text)
            if self._bytes > self._limits.answer:
                raise self._too_large()
            self._text.append(text)
            self._emit(TextDelta, text)
        return text

    def _add_reasoning(self, text: str) -> None:
        if text:
            self._grow(utf8_size(text))
            self._reasoning.append(text)
            self._emit(ReasoningText, text)

    def _end_streams(self) -> None:
        """The end of the answer: what the well-formed streams still held back."""
        self._add_reasoning(self._streamed_reasoning.end())
        self._add_text(self._streamed_text.end())
        self._calls.end_stream()

    def _grow(self, size: int) -> None:
        self._bytes += size
        if self._bytes > self._limits.answer:
            raise self._too_large()

    def _too_large(self) -> ModelProtocolError:
        return answer_too_large(
            f"the model's answer is larger than the {self._limits.answer}-byte limit "
            "(AGENT_RUNTIME_MAX_ANSWER_BYTES)"
        )


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(
        prompt_tokens=token_count(raw.get("prompt_tokens"), "prompt_tokens"),
        completion_tokens=token_count(raw.get("completion_tokens"), "completion_tokens"),
    )
