"""What part of the history goes to the model: the newest messages that fit a token budget.

Tokens are estimated, not counted: no tokenizer is downloaded at run time (none could be on a
user's offline machine), and the model's own tokenizer is unknown anyway. The estimate is a
quarter of the UTF-8 bytes, scaled by a ratio calibrated per session from the prompt_tokens
the model reports (TokenCalibration): after a call or two it tracks that model's tokenizer.

The window, from the newest messages backwards:
- at most `max_messages` messages (the message-count window stays an upper bound);
- never a tool result without its call, nor a call without its results: an assistant
  message that calls a tool and the tool messages answering it go together or not at all;
- the newest user message and everything after it always stay;
- a tool result larger than `max_tool_result_share` of the budget is cut in the middle, with
  a marker saying how much was cut (only in what the model is sent: the stored message stays
  whole);
- older messages are dropped, oldest first, until the estimate fits the budget; if what must
  stay still does not fit, its largest messages are cut in the middle too: their text, the
  string arguments of a tool call, or, when that is not enough (arguments nested in lists
  and objects, numbers), the call's whole arguments as JSON text.
So, the estimate being bytes, the budget bounds the bytes of the messages sent, whatever
one message holds; what always stays past it is the floor of each cut text (_MIN_KEPT_CHARS
and the marker), for at most max_messages messages.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

from agent_runtime.domain.model import Message, Role
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition

BYTES_PER_TOKEN = 4  # an English-heavy average; the per-session calibration corrects it
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per message
_MIN_KEPT_CHARS = 64  # of a cut text, at least (its head and tail)
_MARKER_TOKENS = 16  # the marker saying how much was cut
_MAX_CUTS = 8  # texts of one message cut, at most
# A tool call's arguments that cutting its texts could not shrink enough become their JSON,
# cut, under this one key.
CUT_ARGUMENTS_KEY = "arguments_json_cut_by_the_runtime"


@dataclass(frozen=True, slots=True)
class ContextBudget:
    max_tokens: int
    max_messages: int = 0  # 0: no message-count limit
    # A single tool result larger than this share of max_tokens is cut in the middle.
    max_tool_result_share: float = 0.25


@dataclass(frozen=True, slots=True)
class ContextWindow:
    messages: list[Message]
    # Estimated tokens of the messages, before calibration (what the model's count of the
    # same messages calibrates).
    raw_tokens: int


def raw_tokens(text: str) -> int:
    """Uncalibrated estimate: a quarter of the UTF-8 bytes, rounded up."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return (size + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def raw_message_tokens(message: Message) -> int:
    tokens = MESSAGE_OVERHEAD_TOKENS + raw_tokens(message.content)
    for call in message.tool_calls:
        tokens += raw_tokens(call.tool_name) + raw_tokens(json.dumps(call.arguments))
    return tokens


def raw_tool_tokens(tool: ToolDefinition) -> int:
    """What one tool definition adds to the prompt (its JSON, roughly as sent)."""
    return (
        raw_tokens(tool.name)
        + raw_tokens(tool.description)
        + raw_tokens(json.dumps(tool.parameters))
    )


# The built-in tools' estimates, computed once: every model call offers some of them, and
# their schemas' JSON cost ~40 us a call. Kept with the definition they were computed from:
# any other tool (a client's) is counted per call.
_CATALOGUE_TOKENS: dict[str, tuple[ToolDefinition, int]] = {
    name: (tool, raw_tool_tokens(tool)) for name, tool in TOOL_CATALOGUE.items()
}


def _cached_tool_tokens(tool: ToolDefinition) -> int:
    cached = _CATALOGUE_TOKENS.get(tool.name)
    return cached[1] if cached is not None and cached[0] is tool else raw_tool_tokens(tool)


def raw_tools_tokens(tools: Sequence[ToolDefinition]) -> int:
    """What the tool definitions add to the prompt (their JSON, roughly as sent)."""
    return sum(_cached_tool_tokens(tool) for tool in tools)


def fit_context_window(
    history: Sequence[Message],
    budget: ContextBudget,
    *,
    fixed_raw_tokens: int = 0,
    ratio: float = 1.0,
) -> ContextWindow:
    """The messages to send (copies where cut) within `budget.max_tokens`, which also pays
    for `fixed_raw_tokens` (the system prompt and the tools). `ratio` calibrates the raw
    estimate: calibrated tokens = raw tokens x ratio."""
    window = list(history[-budget.max_messages :]) if budget.max_messages > 0 else list(history)
    # The budget in raw tokens: what the calibrated budget allows of our estimate.
    allowed = max(0, int(budget.max_tokens / ratio) - fixed_raw_tokens)
    tool_limit = int(budget.max_tokens * budget.max_tool_result_share / ratio)
    window = [
        _cut(message, tool_limit)
        if message.role is Role.TOOL and raw_message_tokens(message) > tool_limit
        else message
        for message in window
    ]
    units = _units(window)
    costs = [sum(raw_message_tokens(m) for m in unit) for unit in units]
    required = _required_from(units)
    total = sum(costs)
    start = 0
    while start < required and total > allowed:
        total -= costs[start]
        start += 1
    kept = [message for unit in units[start:] for message in unit]
    if total > allowed:
        kept = _squeeze(kept, total - allowed)
        total = sum(raw_message_tokens(m) for m in kept)
    return ContextWindow(kept, total)


def _units(window: list[Message]) -> list[list[Message]]:
    """The window as units that go together: a tool call with its results, or one message.
    Tool results whose call is not in the window, and a call missing one of its results,
    are left out (a provider rejects both)."""
    units: list[list[Message]] = []
    index = 0
    while index < len(window):
        message = window[index]
        index += 1
        if message.role is Role.TOOL:
            continue  # its call is before the window (or was dropped): not sendable alone
        if message.role is not Role.ASSISTANT or not message.tool_calls:
            units.append([message])
            continue
        unit = [message]
        waiting = {call.call_id for call in message.tool_calls}
        while index < len(window) and window[index].role is Role.TOOL:
            unit.append(window[index])
            waiting.discard(window[index].tool_call_id or "")
            index += 1
        if not waiting:
            units.append(unit)
        elif index == len(window):
            units.append(unit)  # the newest call, still unanswered: as the history is
    return units


def _required_from(units: list[list[Message]]) -> int:
    """The index of the unit holding the newest user message (what must stay from there
    on); the last unit if there is no user message."""
    for index in range(len(units) - 1, -1, -1):
        if units[index][0].role is Role.USER:
            return index
    return max(0, len(units) - 1)


def _squeeze(messages: list[Message], excess: int) -> list[Message]:
    """Cut the largest messages in the middle until `excess` raw tokens are gone."""
    costs = {id(m): raw_message_tokens(m) for m in messages}
    replaced: dict[int, Message] = {}
    for message in sorted(messages, key=lambda m: costs[id(m)], reverse=True):
        if excess <= 0:
            break
        cost = costs[id(message)]
        cut = _cut(message, max(0, cost - excess))
        excess -= cost - raw_message_tokens(cut)
        replaced[id(message)] = cut
    return [replaced.get(id(m), m) for m in messages]


def _cut(message: Message, max_raw_tokens: int) -> Message:
    """A copy of `message` cut to fit `max_raw_tokens` as far as it can shrink: its longest
    text (the content, or a string argument of a tool call it makes) is cut in the middle,
    then the next, its head, tail and the marker kept; then, if that was not enough, the
    arguments of its tool call as a whole (_cut_arguments)."""
    current = message
    for _ in range(_MAX_CUTS):
        excess = raw_message_tokens(current) - max_raw_tokens
        if excess <= 0:
            return current
        shorter = _cut_longest_text(current, excess)
        if shorter is None:
            break  # no text left that can shrink
        current = shorter
    for index in range(len(current.tool_calls)):
        excess = raw_message_tokens(current) - max_raw_tokens
        if excess <= 0:
            break
        current = _cut_arguments(current, index, excess)
    return current


def _cut_longest_text(message: Message, excess: int) -> Message | None:
    texts: list[tuple[str, int, str]] = [(message.content, -1, "")]
    for index, call in enumerate(message.tool_calls):
        texts += [(v, index, k) for k, v in call.arguments.items() if isinstance(v, str)]
    text, call_index, key = max(texts, key=lambda item: len(item[0]))
    shortened = _shortened(text, _kept_chars(text, excess))
    if len(shortened) >= len(text):
        return None
    if call_index < 0:
        return dataclasses.replace(message, content=shortened)
    calls = list(message.tool_calls)
    call = calls[call_index]
    calls[call_index] = dataclasses.replace(call, arguments={**call.arguments, key: shortened})
    return dataclasses.replace(message, tool_calls=tuple(calls))


def _cut_arguments(message: Message, index: int, excess: int) -> Message:
    """The message with its call `index`'s arguments replaced by their JSON text cut in the
    middle, under CUT_ARGUMENTS_KEY, to take `excess` raw tokens less if it can."""
    calls = list(message.tool_calls)
    call = calls[index]
    text = json.dumps(call.arguments)
    before = raw_tokens(text)
    target = before - excess
    keep = _kept_chars(text, excess)
    for _ in range(_MAX_CUTS):  # a few tries: the escapes make the size a guess
        cut = {CUT_ARGUMENTS_KEY: _shortened(text, keep)}
        after = raw_tokens(json.dumps(cut))  # the cut JSON is escaped again in the arguments'
        if after <= target or keep <= _MIN_KEPT_CHARS:
            break
        keep = max(_MIN_KEPT_CHARS, min(keep - 1, keep * max(0, target) // after))
    if after >= before:
        return message  # too small to gain by it
    calls[index] = dataclasses.replace(call, arguments=cut)
    return dataclasses.replace(message, tool_calls=tuple(calls))


def _kept_chars(text: str, excess: int) -> int:
    """How many characters of `text` to keep for it to take `excess` raw tokens less, with
    the marker (at least _MIN_KEPT_CHARS)."""
    tokens = raw_tokens(text)
    if tokens == 0:
        return len(text)
    return max(_MIN_KEPT_CHARS, len(text) * max(0, tokens - excess - _MARKER_TOKENS) // tokens)


def _shortened(content: str, keep: int) -> str:
    if keep >= len(content):
        return content
    head = keep // 2
    tail = keep - head
    cut = len(content) - keep
    marker = f"\n[... {cut} characters cut from the middle by the runtime ...]\n"
    if len(marker) >= cut:
        return content  # cutting would not make it shorter
    return content[:head] + marker + content[len(content) - tail :]
