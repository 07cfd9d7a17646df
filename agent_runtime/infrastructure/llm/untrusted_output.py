"""Model output is untrusted input: the bounds and repairs applied to it at the model client,
so that nothing of an answer reaches the store or protobuf that cannot be read back.

- Text is made well-formed Unicode, as browsers' JSON decoders do: a surrogate pair (even one
  split across two stream events) becomes its character, a lone surrogate U+FFFD. A lone
  surrogate cannot be encoded as UTF-8: stored, it made every later read of the session fail.
- The answer's text, and error texts, have U+0000 replaced by U+FFFD as they come, as every
  store keeps text (domain/text.py): the deltas a client sees add up to the message stored.
- Tool-call arguments nested deeper than MAX_ARGUMENT_DEPTH, larger than the limit, or
  holding an integer no double can hold (protobuf's Struct carries every number as one: such
  a call could be neither sent to a client nor read back) are not kept: the call reaches the
  domain marked invalid, which refuses it with a tool error the model reads (and may retry).
- An answer, an SSE line or event, or a whole completion larger than its limit ends the call
  with MODEL_ANSWER_TOO_LARGE.
- Token counts outside [0, MAX_TOKEN_COUNT] are ignored (counted as 0), with a warning.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass

from agent_runtime.domain.errors import ModelProtocolError
from agent_runtime.domain.text import SURROGATE, storable, well_formed

log = logging.getLogger(__name__)

# protobuf's decoder stops at 100 levels of messages. A JSON object is three of them in a
# google.protobuf.Struct (Struct, its map entry, Value), so a ListMessages page cannot carry
# arguments nested more than 32 objects deep. 20 leaves room for the envelopes around them.
MAX_ARGUMENT_DEPTH = 20
# No model's context window is near it, and a turn's sum of several calls' counts stays far
# below the 2**32 of the protocol's uint32 fields.
MAX_TOKEN_COUNT = 2**24

# A JSON string (an unterminated one runs to the end: matched in one pass, never retried from
# each quote inside it) or a bracket.
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]')
# A \uD800-\uDFFF escape: json.loads turns a lone one into an unencodable lone surrogate.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# The largest double has 309 digits before its point: only a run that long can be an integer
# a double cannot hold. Longer integers are not even parsed (Python refuses past 4300 digits).
_DOUBLE_DIGITS = len(str(int(sys.float_info.max)))
_DOUBLE_SIZED_DIGITS = re.compile(rf"\d{{{_DOUBLE_DIGITS}}}")


@dataclass(frozen=True, slots=True)
class AnswerLimits:
    """Bytes (UTF-8) of one model answer that the client accepts.

    answer: its text and tool calls (names, ids, arguments) together; past it the call fails
    with MODEL_ANSWER_TOO_LARGE. tool_arguments: one call's arguments; past it the call is
    refused with a tool error the model reads. event: one SSE line or event, or a whole
    non-streamed completion (it holds the answer JSON-escaped, so allow several times
    `answer`); past it the call fails with MODEL_ANSWER_TOO_LARGE.
    """

    answer: int = 1024 * 1024
    tool_arguments: int = 512 * 1024
    event: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("answer", "tool_arguments", "event"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"limit {name} must be a positive number of bytes, not {value}")


DEFAULT_ANSWER_LIMITS = AnswerLimits()


def answer_too_large(message: str) -> ModelProtocolError:
    """Not retryable: the same request would get the same answer."""
    return ModelProtocolError(message, reason="MODEL_ANSWER_TOO_LARGE")


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class StreamedText:
    """Text deltas made well-formed, a surrogate pair split across two deltas joined: a high
    surrogate that ends a delta is held back until the next one (or the end) says what it is.
    U+0000 becomes U+FFFD (domain/text.py).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def add(self, text: str) -> str:
        text = storable(text)
        if self._held:
            text, self._held = self._held + text, ""
        if text.isascii() or SURROGATE.search(text) is None:
            return text
        if "\ud800" <= text[-1] <= "\udbff":
            text, self._held = text[:-1], text[-1]
        return well_formed(text)

    def end(self) -> str:
        """What is still held: a high surrogate nothing followed, so U+FFFD (or nothing)."""
        held, self._held = self._held, ""
        return "\ufffd" if held else ""


def checked_arguments(arguments: str) -> tuple[str, str]:
    """(arguments to keep, why they cannot be kept). Arguments that are not JSON are kept as
    they are: the domain refuses them, saying so."""
    if nests_deeper_than(arguments, MAX_ARGUMENT_DEPTH):
        return "", f"the arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
    if _DOUBLE_SIZED_DIGITS.search(arguments) is not None and holds_integer_past_double(arguments):
        return "", "the arguments hold an integer too large for a double (past 1.8e308)"
    arguments = well_formed(arguments)
    if _ESCAPED_SURROGATE.search(arguments) is not None:
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments, ""
        arguments = json.dumps(_well_formed_value(value), ensure_ascii=False)
    return arguments, ""


class _IntegerPastDouble(Exception):
    pass


def _double_sized_int(digits: str) -> int:
    if len(digits.lstrip("-")) > _DOUBLE_DIGITS:
        raise _IntegerPastDouble
    value = int(digits)
    try:
        float(value)
    except OverflowError:
        raise _IntegerPastDouble from None
    return value


def holds_integer_past_double(text: str) -> bool:
    """Whether the JSON text (nested no deeper than MAX_ARGUMENT_DEPTH) holds an integer
    whose magnitude no double reaches; False for text that is not JSON."""
    try:
        json.loads(text, parse_int=_double_sized_int)
    except _IntegerPastDouble:
        return True
    except ValueError:
        return False
    return False


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON text has more than `limit` arrays and objects inside one another
    (without parsing it: json.loads recurses, and fails on deep enough input)."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _well_formed_value(value: object) -> object:
    if isinstance(value, str):
        return well_formed(value)
    if isinstance(value, list):
        return [_well_formed_value(item) for item in value]
    if isinstance(value, dict):
        return {well_formed(key): _well_formed_value(item) for key, item in value.items()}
    return value


def token_count(value: object, name: str) -> int:
    """A usage count as the model reported it; 0 when it is not a plausible count."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0
    if 0 <= value <= MAX_TOKEN_COUNT:
        return value
    log.warning(
        "the model endpoint reported %s = %d, outside 0..%d: counted as 0",
        name,
        value,
        MAX_TOKEN_COUNT,
    )
    return 0
