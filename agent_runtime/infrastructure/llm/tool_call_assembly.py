"""The tool calls of one model answer, assembled from the fragments the model streams (or
lists whole in a completion). Only the first call is used, so only its arguments are
streamed as they come; every byte counts towards the answer's size limit, and a call's
arguments past their own limit are dropped, the call then refused with the reason."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from agent_runtime.domain.errors import ModelProtocolError
from agent_runtime.domain.model_output import RequestedToolCall, StreamedOutput, ToolCallFragment
from agent_runtime.domain.text import well_formed
from agent_runtime.infrastructure.llm.endpoint_errors import Redactor, excerpt
from agent_runtime.infrastructure.llm.untrusted_output import (
    AnswerLimits,
    StreamedText,
    checked_arguments,
    utf8_size,
)

log = logging.getLogger(__name__)

# Only the first call is used; this bounds what a model that never stops listing calls (each
# with nothing in it yet) makes the client hold.
_MAX_TOOL_CALLS = 128


@dataclass(slots=True)
class PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    arguments_bytes: int = 0  # all received, also those no longer kept
    # The first call's argument fragments as streamed (well-formed, a split pair joined).
    streamed: StreamedText | None = None


class ToolCallAssembly:
    """The answer's calls by index. `grow` counts bytes against the answer's limit (and
    raises past it); `output` hands out a streamed fragment of the first call."""

    def __init__(
        self,
        limits: AnswerLimits,
        redact: Redactor,
        grow: Callable[[int], None],
        output: Callable[[type[StreamedOutput], str, PartialCall], None],
    ) -> None:
        self._limits = limits
        self._redact = redact
        self._grow = grow
        self._output = output
        self._calls: dict[int, PartialCall] = {}
        self._first_call: PartialCall | None = None  # the call whose arguments are streamed

    def finished(self) -> tuple[RequestedToolCall, ...]:
        """The calls in index order, each checked (a bad one carries why it is refused)."""
        return tuple(self._finished(index, call) for index, call in sorted(self._calls.items()))

    def end_stream(self) -> None:
        """The end of the answer: what the first call's stream still held back."""
        call = self._first_call
        if call is not None and call.streamed is not None:
            if tail := call.streamed.end():
                self._output(ToolCallFragment, tail, call)
            call.streamed = None

    def add(self, fragment: object, default_index: int | None) -> None:
        """One fragment of a call, as a stream chunk (or a whole completion) lists it."""
        if not isinstance(fragment, dict):
            raise ModelProtocolError("a tool call from the model endpoint is not a JSON object")
        raw_id = fragment.get("id")
        call_id = raw_id if isinstance(raw_id, str) else ""
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = default_index if default_index is not None else self._index_for(call_id)
        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= _MAX_TOOL_CALLS:
                raise ModelProtocolError(
                    f"the model sent more than {_MAX_TOOL_CALLS} tool calls in one answer"
                )
            call = self._calls[index] = PartialCall()
            if self._first_call is None:
                self._first_call = call
                call.streamed = StreamedText()
        if call_id and not call.call_id:
            self._grow(utf8_size(call_id))
            call.call_id = well_formed(call_id)
        function = fragment.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        # Some servers repeat the name in every fragment: the first one is the name.
        if isinstance(name, str) and name and not call.name:
            self._grow(utf8_size(name))
            call.name = well_formed(name)
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments)  # a few servers send an object
        if isinstance(arguments, str) and arguments:
            size = utf8_size(arguments)
            self._grow(size)
            call.arguments_bytes += size
            if call.arguments_bytes <= self._limits.tool_arguments:
                call.arguments.append(arguments)
                if call.streamed is not None:
                    self._stream_fragment(call, arguments)
            else:
                call.arguments.clear()  # never kept: no need to hold them
                call.streamed = None  # nor streamed further: the call will be refused

    def _stream_fragment(self, call: PartialCall, arguments: str) -> None:
        """Hand the first call's arguments out as they come (the call id fixed now, so the
        fragments and the call agree)."""
        if not call.call_id:
            call.call_id = f"call_{uuid.uuid4().hex}"
        assert call.streamed is not None
        if fragment := call.streamed.add(arguments):
            self._output(ToolCallFragment, fragment, call)

    def _index_for(self, call_id: str) -> int:
        """Where a fragment without "index" belongs: its id's call, else a new or the last one."""
        if call_id:
            for index, call in self._calls.items():
                if call.call_id == call_id:
                    return index
            return max(self._calls, default=-1) + 1
        return max(self._calls, default=0)

    def _finished(self, index: int, call: PartialCall) -> RequestedToolCall:
        if not call.name:
            raise ModelProtocolError(f"the model sent tool call #{index} without a function name")
        if call.arguments_bytes > self._limits.tool_arguments:
            arguments, problem = (
                "",
                (
                    f"the arguments are {call.arguments_bytes} bytes, over the "
                    f"{self._limits.tool_arguments}-byte limit"
                ),
            )
        else:
            arguments, problem = checked_arguments("".join(call.arguments))
        if problem:
            # The model's error: it reads the problem as the call's tool error.
            log.warning(
                "the model's call of %s refused (MODEL_BAD_RESPONSE): %s",
                excerpt(call.name, self._redact, 100),
                problem,
            )
        return RequestedToolCall(
            call_id=call.call_id or f"call_{uuid.uuid4().hex}",
            tool_name=call.name,
            arguments_json=arguments,
            invalid_arguments=problem,
        )
