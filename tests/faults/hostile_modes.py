"""The misbehaviours of a model endpoint that test_hostile_model.py runs (issue 18): for each,
the model's HTTP responses (the fake model server's), the outcome it must have and why, and
what is checked of it besides what every mode is checked for.

The runtime's limits are its defaults scaled down (LIMITS), so that the modes past them stay
small and fast.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.read_back import ReadBack
from tests.support.fake_model_server import (
    DONE_FRAME,
    ScriptedResponse,
    drop_connection_after,
    endless_line,
    http_error,
    raw_response,
    raw_sse,
    sse_frame,
    stall_after,
    text_answer,
    tool_call_answer,
    tool_call_frame,
    trickle,
    whole_body,
)
from tests.support.grpc_helpers import kinds, only

FFFD = "\ufffd"
NUL = "\x00"
EMOJI = "\U0001f600"  # U+1F600: the surrogate pair \ud83d \ude00 in UTF-16
KIB = 1024
MAX_ANSWER_BYTES = 64 * KIB
MAX_TOOL_ARGUMENT_BYTES = 16 * KIB
MAX_EVENT_BYTES = 128 * KIB
# The defaults scaled down: a turn's max_iterations (8) answers of the largest size are more
# than the gRPC server sends in one message (by default 8 x 512 KiB of arguments, 4 MiB).
MAX_SEND_MESSAGE_BYTES = 96 * KIB
LIMITS: dict[str, dict[str, Any]] = {
    "transport": {"max_send_message_bytes": MAX_SEND_MESSAGE_BYTES},
    "model": {
        "idle_timeout": 0.5,
        "first_token_timeout": 5.0,
        "max_attempts": 2,
        "max_event_bytes": MAX_EVENT_BYTES,
    },
    "answers": {
        "max_answer_bytes": MAX_ANSWER_BYTES,
        "max_tool_argument_bytes": MAX_TOOL_ARGUMENT_BYTES,
    },
}


# -- what a mode is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a mode's turn did: its chunks as streamed, the session read back after it, and the
    requests the model endpoint received for it."""

    chunks: list[rt.StreamChunk]
    read: ReadBack
    requests: list[dict[str, Any]]


Check = Callable[[Seen], None]


@dataclass(frozen=True)
class Mode:
    """`answers`: the model's responses to the turn's requests, in order (each is taken: a
    mode that expects a retry or a second call scripts it). `fails_with`: the Error reason
    the client must see; empty: the turn ends with `stop` and no Error. `why`: why that is
    the right outcome. `before`: the model's answers to a first turn of the session."""

    answers: tuple[ScriptedResponse, ...]
    why: str
    fails_with: str = ""
    stop: rt.StopReason.ValueType = rt.STOP_REASON_END_TURN
    agent: str = ""
    checks: tuple[Check, ...] = ()
    before: tuple[ScriptedResponse, ...] = ()
    # Set once the client has received the turn's first AssistantDelta.
    streamed: asyncio.Event | None = None


def fails(
    reason: str,
    why: str,
    *answers: ScriptedResponse,
    checks: tuple[Check, ...] = (),
    streamed: asyncio.Event | None = None,
) -> Mode:
    return Mode(
        answers, why, fails_with=reason, stop=rt.STOP_REASON_ERROR, checks=checks, streamed=streamed
    )


def ends(
    stop: rt.StopReason.ValueType,
    why: str,
    *answers: ScriptedResponse,
    checks: tuple[Check, ...] = (),
    agent: str = "",
    before: tuple[ScriptedResponse, ...] = (),
) -> Mode:
    return Mode(answers, why, stop=stop, checks=checks, agent=agent, before=before)


# -- the model's answers -----------------------------------------------------------------------


def text_frames(
    *pieces: str, finish: Any = "stop", usage: Any = None, done: bool = True
) -> list[bytes]:
    """Each piece of text its own SSE event, then the finish reason, usage and [DONE]."""
    frames = [sse_frame({"role": "assistant", "content": ""})]
    frames += [sse_frame({"content": piece}) for piece in pieces]
    frames.append(sse_frame({}, finish, **({} if usage is None else {"usage": usage})))
    return frames + ([DONE_FRAME] if done else [])


def text_stream(
    *pieces: str, finish: Any = "stop", usage: Any = None, done: bool = True
) -> ScriptedResponse:
    return raw_sse(text_frames(*pieces, finish=finish, usage=usage, done=done))


def tool_call_stream(
    name: str, *argument_pieces: str, call_id: str = "call_h", index: int = 0
) -> ScriptedResponse:
    """One tool call: its id and name first, then each piece of its arguments' text."""
    frames = [tool_call_frame(index, call_id, name, "")]
    frames += [tool_call_frame(index, None, None, piece) for piece in argument_pieces]
    return raw_sse([*frames, sse_frame({}, "tool_calls"), DONE_FRAME])


def completion(message: dict[str, Any], finish: str = "stop") -> ScriptedResponse:
    """A whole JSON completion with 200, whatever the request asked ("stream": true)."""
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    return whole_body(200, json.dumps(body).encode(), "application/json")


def nested(depth: int) -> str:
    return '{"path": ' + "[" * depth + '"a.py"' + "]" * depth + "}"


ANSWER_AFTER_REFUSAL = "I see; trying something else."


def then_answers(*answers: ScriptedResponse) -> tuple[ScriptedResponse, ...]:
    """A refused call, then the model's answer once it read why."""
    return (*answers, text_answer(ANSWER_AFTER_REFUSAL))


# -- what is checked per mode --------------------------------------------------------------------


def answered(text: str) -> Check:
    """The client got `text`, as deltas and as the message, and `text` is what is stored."""

    def check(seen: Seen) -> None:
        streamed = "".join(
            c.assistant_delta.text for c in seen.chunks if c.HasField("assistant_delta")
        )
        assert streamed == text
        assert only(seen.chunks, "assistant_message").assistant_message.content == text
        last = seen.read.messages[-1]
        assert (last.role, last.content, last.incomplete) == (ses.ROLE_ASSISTANT, text, False)

    return check


def called(tool: str, arguments: dict[str, Any], *, runtime_id: bool = False) -> Check:
    """The client was asked to run `tool` with `arguments` (the repaired ones), as stored;
    `runtime_id`: under an id of the runtime's, not the model's."""

    def check(seen: Seen) -> None:
        call = only(seen.chunks, "tool_call").tool_call
        assert (call.tool_name, dict(call.arguments)) == (tool, arguments)
        stored = seen.read.messages[-1].tool_calls
        assert [(c.call_id, c.tool_name, dict(c.arguments)) for c in stored] == [
            (call.call_id, tool, arguments)
        ]
        if runtime_id:
            assert call.call_id.startswith("call_") and len(call.call_id) <= 128
            assert call.call_id.isprintable()
        if call.requires_approval:
            [pending] = seen.read.approvals
            assert (pending.call_id, dict(pending.arguments)) == (call.call_id, arguments)

    return check


def refused(problem: str) -> Check:
    """The call never reached the client: the model was told why (a tool error it read),
    then answered; the refused call and its error are in the history."""

    def check(seen: Seen) -> None:
        assert "tool_call" not in kinds(seen.chunks)
        told = seen.requests[-1]["messages"][-1]
        assert told["role"] == "tool" and problem in told["content"], told
        *_, call, error, answer = seen.read.messages
        assert call.role == ses.ROLE_ASSISTANT and len(call.tool_calls) == 1
        assert error.role == ses.ROLE_TOOL and error.is_error and problem in error.content
        assert error.tool_call_id == call.tool_calls[0].call_id
        assert answer.content == ANSWER_AFTER_REFUSAL

    return check


def kept_partial(upto: str = "") -> Check:
    """What the client was streamed before the failure is stored, marked incomplete: `upto`,
    or less of it when the failure came in the same network read as the text before it
    (the model client hands out nothing of a read it fails on)."""

    def check(seen: Seen) -> None:
        streamed = "".join(
            c.assistant_delta.text for c in seen.chunks if c.HasField("assistant_delta")
        )
        assert upto.startswith(streamed), streamed
        last = seen.read.messages[-1]
        if streamed:
            assert (last.role, last.content, last.incomplete) == (
                ses.ROLE_ASSISTANT,
                streamed,
                True,
            )
        else:
            assert last.role == ses.ROLE_USER

    return check


def usage_is(prompt: int, completion: int) -> Check:
    """Counts outside 0..2^24 (or not integers) are counted as 0, the others kept."""

    def check(seen: Seen) -> None:
        for usage in (seen.chunks[-1].turn_completed.usage, seen.read.turn.usage):
            assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
                prompt,
                completion,
                prompt + completion,
            )

    return check


def requests(count: int) -> Check:
    def check(seen: Seen) -> None:
        assert len(seen.requests) == count

    return check


def reasoned(text: str) -> Check:
    def check(seen: Seen) -> None:
        thought = "".join(
            c.reasoning_delta.text for c in seen.chunks if c.HasField("reasoning_delta")
        )
        assert thought == text

    return check


def finish_reason_recorded(expected: str) -> Check:
    def check(seen: Seen) -> None:
        [completed] = [
            e for e in seen.read.events if e.type == ev.EVENT_TYPE_MODEL_REQUEST_COMPLETED
        ]
        assert completed.data["finish_reason"] == expected

    return check


def switched_because(reason: str, *, prefix: bool = False) -> Check:
    """The session moved to another agent, for `reason` (stored and sent as repaired)."""

    def check(seen: Seen) -> None:
        sent = only(seen.chunks, "agent_switched").agent_switched.reason
        [stored] = seen.read.session.agent_history
        for text in (sent, stored.reason):
            assert text.endswith(reason) if prefix else text == reason, text

    return check


def switched_for(reasons: list[str]) -> Check:
    """The switches' reasons, as sent and as stored."""

    def check(seen: Seen) -> None:
        sent = [c.agent_switched.reason for c in seen.chunks if c.HasField("agent_switched")]
        stored = [s.reason for s in seen.read.session.agent_history]
        assert sent == stored == reasons

    return check


def new_call_id_unlike(model_id: str) -> Check:
    def check(seen: Seen) -> None:
        call = only(seen.chunks, "tool_call").tool_call
        assert call.call_id != model_id
        ids = [c.call_id for m in seen.read.messages for c in m.tool_calls]
        assert len(ids) == len(set(ids)), ids

    return check


# -- the modes -----------------------------------------------------------------------------------

BAD = "MODEL_BAD_RESPONSE"
TOO_LARGE = "MODEL_ANSWER_TOO_LARGE"
LONE = "lone \ud800 surrogate"  # json.dumps sends it as "lone \\ud800 surrogate"
CUT = asyncio.Event()  # the client has read the first words of the answer to cut
ABSURD_FINISH = "\ud800" + NUL + "\n" + "x" * 10_000

MODES: dict[str, Mode] = {
    # Text the stores and protobuf cannot carry as it is: repaired, so the turn ends normally.
    "lone surrogate in text": ends(
        rt.STOP_REASON_END_TURN,
        "a lone surrogate cannot be encoded as UTF-8; it becomes U+FFFD as in a browser",
        text_stream(LONE),
        checks=(answered(f"lone {FFFD} surrogate"),),
    ),
    "lone surrogate in tool-call arguments, JSON-escaped": ends(
        rt.STOP_REASON_TOOL_CALL,
        "the arguments are JSON: the \\ud800 escape is decoded and repaired as text",
        tool_call_stream("read_file", '{"path": "a\\ud800.py"}'),
        checks=(called("read_file", {"path": f"a{FFFD}.py"}),),
    ),
    "lone surrogate in tool-call arguments, raw, awaiting approval": ends(
        rt.STOP_REASON_AWAITING_APPROVAL,
        "repaired as text; the pending approval carries the repaired arguments",
        tool_call_stream("write_file", '{"path": "a.md", "content": "x', "\ud800", '"}'),
        checks=(called("write_file", {"path": "a.md", "content": f"x{FFFD}"}),),
    ),
    "emoji surrogate pair split across two SSE events": ends(
        rt.STOP_REASON_END_TURN,
        "the high surrogate is held back until the next event completes the character",
        text_stream("split \ud83d", "\ude00 joined"),
        checks=(answered(f"split {EMOJI} joined"),),
    ),
    "emoji surrogate pair split across two argument fragments": ends(
        rt.STOP_REASON_TOOL_CALL,
        "the arguments' text is joined before it is read as JSON",
        tool_call_stream("read_file", '{"path": "\ud83d', '\ude00.py"}'),
        checks=(called("read_file", {"path": f"{EMOJI}.py"}),),
    ),
    "NUL in text": ends(
        rt.STOP_REASON_END_TURN,
        "free text is stored with U+0000 as U+FFFD on every store (PostgreSQL cannot hold it)",
        text_stream(f"a{NUL}b"),
        checks=(answered(f"a{FFFD}b"),),
    ),
    "NUL in tool-call arguments": ends(
        rt.STOP_REASON_TOOL_CALL,
        "arguments are stored as JSON, which escapes U+0000: kept as the model sent them",
        tool_call_stream("read_file", json.dumps({"path": f"a{NUL}b.py"})),
        checks=(called("read_file", {"path": f"a{NUL}b.py"}),),
    ),
    "NUL in a tool name": ends(
        rt.STOP_REASON_END_TURN,
        "no tool has that name: refused with a tool error the model reads, then it answers",
        *then_answers(tool_call_stream(f"read{NUL}file", '{"path": "a.py"}')),
        checks=(refused(f"read{FFFD}file"),),
    ),
    "noncharacters, a BOM and bidi controls in text": ends(
        rt.STOP_REASON_END_TURN,
        "valid Unicode however odd: stored and streamed as it came",
        text_stream("\ufeffodd \uffff\ufffe \u202e\u2028 \U0010ffff"),
        checks=(answered("\ufeffodd \uffff\ufffe \u202e\u2028 \U0010ffff"),),
    ),
    "reasoning_content with surrogates": ends(
        rt.STOP_REASON_END_TURN,
        "reasoning is text like the answer: repaired the same way as it streams",
        raw_sse(
            [
                sse_frame({"reasoning_content": "think \ud800 then \ud83d"}),
                sse_frame({"reasoning_content": "\ude00 done"}),
                sse_frame({"content": "the answer"}, "stop"),
                DONE_FRAME,
            ]
        ),
        checks=(reasoned(f"think {FFFD} then {EMOJI} done"), answered("the answer")),
    ),
    "invalid UTF-8 bytes in the stream": ends(
        rt.STOP_REASON_END_TURN,
        "the stream is decoded as UTF-8 with replacement, as the SSE rules ask",
        raw_sse(
            [
                b'data: {"choices": [{"index": 0, "delta": {"content": '
                b'"bad \xff\xed\xa0\x80 bytes"}}]}\n\n',
                sse_frame({}, "stop"),
                DONE_FRAME,
            ]
        ),
        checks=(answered(f"bad {FFFD * 4} bytes"),),
    ),
    "a stream with a BOM and CR line ends": ends(
        rt.STOP_REASON_END_TURN,
        "both are SSE: the BOM is dropped, a lone CR ends a line",
        raw_sse(
            [
                b"\xef\xbb\xbf" + sse_frame({"content": "cr "}).replace(b"\n", b"\r"),
                sse_frame({"content": "lines"}, "stop").replace(b"\n", b"\r\n"),
                DONE_FRAME.replace(b"\n", b"\r"),
            ]
        ),
        checks=(answered("cr lines"),),
    ),
    "deltas that change role mid-stream": ends(
        rt.STOP_REASON_END_TURN,
        "a completion has one role, the assistant's: a delta's role field is not the runtime's "
        "to obey, its text is part of the answer",
        raw_sse(
            [
                sse_frame({"role": "assistant", "content": "one "}),
                sse_frame({"role": "user", "content": "two "}),
                sse_frame({"role": "system", "content": "three"}),
                sse_frame({"role": "tool"}, "stop"),
                DONE_FRAME,
            ]
        ),
        checks=(answered("one two three"),),
    ),
    "content as parts and as a number": ends(
        rt.STOP_REASON_END_TURN,
        "content parts are text; content that is not text carries none",
        raw_sse(
            [
                sse_frame({"content": [{"type": "text", "text": "in parts"}, {"type": "image"}]}),
                sse_frame({"content": 42}),
                sse_frame({"content": {"text": "an object"}}, "stop"),
                DONE_FRAME,
            ]
        ),
        checks=(answered("in parts"),),
    ),
    "a whole JSON completion with surrogates and NUL": ends(
        rt.STOP_REASON_END_TURN,
        "a server that ignores stream: true is read as one completion, repaired the same way",
        completion({"role": "assistant", "content": f"whole \ud83d\ude00 \udc00 {NUL}"}),
        checks=(answered(f"whole {EMOJI} {FFFD} {FFFD}"),),
    ),
    # Usage counts: impossible ones are ignored, the turn is not failed for them.
    "usage counts negative": ends(
        rt.STOP_REASON_END_TURN,
        "a count below 0 is impossible: counted as 0",
        text_stream("ok", usage={"prompt_tokens": -5, "completion_tokens": 7}),
        checks=(usage_is(0, 7),),
    ),
    "usage counts above 2^32": ends(
        rt.STOP_REASON_END_TURN,
        "a count over 2^24 is implausible (and over the protocol's uint32): counted as 0",
        text_stream("ok", usage={"prompt_tokens": 2**32 + 1, "completion_tokens": 2**63}),
        checks=(usage_is(0, 0),),
    ),
    "usage counts not integers": ends(
        rt.STOP_REASON_END_TURN,
        "a count that is not an integer is no count: counted as 0",
        text_stream(
            "ok", usage={"prompt_tokens": 1.5, "completion_tokens": "12", "total_tokens": None}
        ),
        checks=(usage_is(0, 0),),
    ),
    "usage that is not an object": ends(
        rt.STOP_REASON_END_TURN,
        "no usage at all",
        text_stream("ok", usage=[1, 2]),
        checks=(usage_is(0, 0),),
    ),
    # Sizes and depths.
    "an answer over AGENT_RUNTIME_MAX_ANSWER_BYTES": fails(
        TOO_LARGE,
        "the runtime does not hold an unbounded answer; what was streamed is kept incomplete",
        text_stream(*["x" * (8 * KIB)] * 10),
        checks=(kept_partial("x" * MAX_ANSWER_BYTES),),
    ),
    "tool-call arguments over the tool-argument limit": ends(
        rt.STOP_REASON_END_TURN,
        "refused with a tool error the model reads (it may send smaller ones), then it answers",
        *then_answers(tool_call_stream("read_file", '{"path": "', *["y" * (4 * KIB)] * 5, '"}')),
        checks=(refused(f"over the {MAX_TOOL_ARGUMENT_BYTES}-byte limit"),),
    ),
    "tool-call arguments nested 50 deep": ends(
        rt.STOP_REASON_END_TURN,
        "past protobuf's decode depth once a Struct: refused with a tool error, then answered",
        *then_answers(tool_call_stream("read_file", nested(50))),
        checks=(refused("nested deeper than 20 levels"),),
    ),
    "tool-call arguments nested 5000 deep": ends(
        rt.STOP_REASON_END_TURN,
        "the depth is measured without parsing (json.loads would recurse): refused the same",
        *then_answers(tool_call_stream("read_file", nested(5000))),
        checks=(refused("nested deeper than 20 levels"),),
    ),
    "a stream event nested 5000 deep": fails(
        BAD,
        "the event itself cannot be parsed (Python's JSON parser recurses): a bad response",
        raw_sse([b'data: {"choices": ' + b"[" * 5000 + b"]" * 5000 + b"}\n\n", DONE_FRAME]),
    ),
    "an SSE line that never ends, over the event limit": fails(
        TOO_LARGE,
        "a line is buffered up to AGENT_RUNTIME_LLM_MAX_EVENT_BYTES, then the call ends",
        endless_line(
            b'data: {"choices": [{"index": 0, "delta": {"content": "',
            b"z" * (16 * KIB),
            up_to_bytes=4 * MAX_EVENT_BYTES,
        ),
    ),
    "an orchestrator's routing answer with escaped NUL and surrogates": ends(
        rt.STOP_REASON_END_TURN,
        "the routing answer's JSON is decoded again, its escapes with it: the reason is "
        "repaired like any text from the model (a lone surrogate in it failed the turn as a "
        "bug: it could not be stored); the chosen agent then answers",
        text_answer('{"agent": "ask", "confidence": 1e999, "reason": "q\\u0000 \\udc00"}'),
        text_answer("ask here"),
        agent="orchestrator",
        checks=(answered("ask here"), switched_because(f"q{FFFD} {FFFD}", prefix=True)),
    ),
    # Tool calls the domain refuses: the model reads why and answers.
    "numbers a double holds only as infinity, or not at all": ends(
        rt.STOP_REASON_END_TURN,
        "JSON's 1e400 reads as infinity and NaN as NaN, which a Struct holds: stored and read "
        "back; neither is a line number, so the call is refused with a tool error",
        *then_answers(
            tool_call_stream("read_file", '{"path": "a.py", "start_line": 1e400, "end_line": NaN}')
        ),
        checks=(refused("is not of type 'integer'"),),
    ),
    "an integer too large for a double in tool-call arguments": ends(
        rt.STOP_REASON_END_TURN,
        "protobuf's Struct holds numbers as doubles: one past 1.8e308 could be neither sent "
        "nor read back (the session's every ListMessages failed), so the call is refused with "
        "a tool error the model reads",
        *then_answers(
            tool_call_stream("read_file", '{"path": "a.py", "start_line": 9' + "9" * 400 + "}")
        ),
        checks=(refused("an integer too large for a double"),),
    ),
    "an integer of 5000 digits in tool-call arguments": ends(
        rt.STOP_REASON_END_TURN,
        "past what Python parses (4300 digits; it failed the turn as a bug): refused the same",
        *then_answers(
            tool_call_stream("read_file", '{"path": "a.py", "start_line": 1' + "0" * 5000 + "}")
        ),
        checks=(refused("an integer too large for a double"),),
    ),
    "a tool name of 10 000 characters with control characters": ends(
        rt.STOP_REASON_END_TURN,
        "no tool has that name: refused with a tool error the model reads, then it answers",
        *then_answers(tool_call_stream("read\x01\n" * 2000, '{"path": "a.py"}')),
        checks=(refused("may not call tool"),),
    ),
    "switch_mode calls with reasons as long as the arguments may be": ends(
        rt.STOP_REASON_END_TURN,
        "every switch is in the session's agent history, which GetSession and ListSessions "
        "send whole: a reason is cut short, so that a model's switches cannot make the session "
        "(and the tenant's session list) larger than a gRPC message",
        *[
            tool_call_stream(
                "switch_mode",
                json.dumps({"mode": mode, "reason": "r" * (15 * KIB)}),
                call_id=f"call_{n}",
            )
            for n, mode in enumerate(["architect", "ask"] * 3 + ["debug"])
        ],
        text_answer("debug here"),
        checks=(answered("debug here"), switched_for(["r" * 1024] * 7)),
    ),
    "switch_mode with NUL and surrogates in its reason": ends(
        rt.STOP_REASON_END_TURN,
        "a switch's reason is free text: stored with U+FFFD; the new agent then answers",
        tool_call_stream("switch_mode", '{"mode": "architect", "reason": "r\\u0000 \\ud800"}'),
        text_answer("architect here"),
        checks=(answered("architect here"), switched_because(f"r{FFFD} {FFFD}")),
    ),
    "invalid JSON arguments": ends(
        rt.STOP_REASON_END_TURN,
        "the model's mistake: a tool error it reads, then it answers",
        *then_answers(tool_call_stream("read_file", '{"path": "a.py"')),
        checks=(refused("arguments are not valid JSON"),),
    ),
    "arguments that are a JSON array": ends(
        rt.STOP_REASON_END_TURN,
        "arguments must be an object: a tool error, then an answer",
        *then_answers(tool_call_stream("read_file", '["a.py"]')),
        checks=(refused("arguments are not a JSON object"),),
    ),
    "a tool the agent may not use": ends(
        rt.STOP_REASON_END_TURN,
        "the ask agent is read-only: write_file is refused with a tool error, then answered",
        *then_answers(tool_call_stream("write_file", '{"path": "a.md", "content": "x"}')),
        agent="ask",
        checks=(refused("write_file"),),
    ),
    "a path outside the agent's allowed paths": ends(
        rt.STOP_REASON_END_TURN,
        "the architect writes *.md only: refused with a tool error, then answered",
        *then_answers(tool_call_stream("write_file", '{"path": "src/app.py", "content": "x"}')),
        agent="architect",
        checks=(refused("the architect may write only *.md files"),),
    ),
    "switch_mode to an unknown mode": ends(
        rt.STOP_REASON_END_TURN,
        "the switch is a tool error the model reads (the known modes listed), then it answers",
        *then_answers(tool_call_stream("switch_mode", '{"mode": "wizard", "reason": "magic"}')),
        checks=(refused("Unknown mode 'wizard'"),),
    ),
    "a refused call's id reused by the model's next call": ends(
        rt.STOP_REASON_TOOL_CALL,
        "call ids are unique per session: the second call gets an id of the runtime's",
        tool_call_stream("no_such_tool", "{}", call_id="call_again"),
        tool_call_stream("read_file", '{"path": "a.py"}', call_id="call_again"),
        checks=(called("read_file", {"path": "a.py"}), new_call_id_unlike("call_again")),
    ),
    "a tool call id of 500 characters with control characters": ends(
        rt.STOP_REASON_TOOL_CALL,
        "no client could send that id back: the call gets an id of the runtime's",
        tool_call_stream("read_file", '{"path": "a.py"}', call_id=("id\x01\n\t" * 100)),
        checks=(called("read_file", {"path": "a.py"}, runtime_id=True),),
    ),
    "call ids duplicated across turns": ends(
        rt.STOP_REASON_TOOL_CALL,
        "some servers count from call_0 in every response: the repeat gets an id of the "
        "runtime's, so the client's tool result names one call",
        tool_call_answer("read_file", {"path": "b.py"}, call_id="call_0"),
        before=(tool_call_answer("read_file", {"path": "a.py"}, call_id="call_0"),),
        checks=(called("read_file", {"path": "b.py"}), new_call_id_unlike("call_0")),
    ),
    "128 tool calls": ends(
        rt.STOP_REASON_TOOL_CALL,
        "one tool at a time: the first is kept, the others dropped",
        raw_sse(
            [
                *(
                    tool_call_frame(i, f"call_{i}", "read_file", '{"path": "a.py"}')
                    for i in range(128)
                ),
                sse_frame({}, "tool_calls"),
                DONE_FRAME,
            ]
        ),
        checks=(called("read_file", {"path": "a.py"}),),
    ),
    "129 tool calls": fails(
        BAD,
        "a model that never stops listing calls is cut off at 128: a bad response",
        raw_sse(
            [
                *(tool_call_frame(i, f"call_{i}", "read_file", "{}") for i in range(129)),
                sse_frame({}, "tool_calls"),
                DONE_FRAME,
            ]
        ),
    ),
    "a tool call without a name": fails(
        BAD,
        "a call of nothing cannot be run nor refused by name: a bad response",
        raw_sse(
            [tool_call_frame(0, "call_x", None, "{}"), sse_frame({}, "tool_calls"), DONE_FRAME]
        ),
    ),
    "a tool call whose name comes after its arguments": ends(
        rt.STOP_REASON_TOOL_CALL,
        "fragments belong to their index, in whatever order their fields come",
        raw_sse(
            [
                tool_call_frame(0, None, None, '{"path": '),
                tool_call_frame(0, None, None, '"a.py"}'),
                tool_call_frame(0, "call_late", "read_file", ""),
                sse_frame({}, "tool_calls"),
                DONE_FRAME,
            ]
        ),
        checks=(called("read_file", {"path": "a.py"}),),
    ),
    "a tool call id that is not a string": ends(
        rt.STOP_REASON_TOOL_CALL,
        "no id: the call gets one of the runtime's",
        raw_sse(
            [
                sse_frame(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": {"not": "an id"},
                                "function": {"name": "read_file", "arguments": '{"path": "a"}'},
                            }
                        ]
                    }
                ),
                sse_frame({}, "tool_calls"),
                DONE_FRAME,
            ]
        ),
        checks=(called("read_file", {"path": "a"}, runtime_id=True),),
    ),
    "refused calls with arguments as large as allowed, up to the iteration limit": ends(
        rt.STOP_REASON_MAX_ITERATIONS,
        "each refused call is kept in the history with its arguments: the history is then more "
        "than one gRPC message, and ListMessages pages must stop short of that",
        *[
            tool_call_stream(
                "read_file",
                json.dumps({"path": "a.py", "junk": "j" * (15 * KIB)}),
                call_id=f"call_{n}",
            )
            for n in range(8)
        ],
        checks=(requests(8),),
    ),
    "refused calls until the iteration limit": ends(
        rt.STOP_REASON_MAX_ITERATIONS,
        "a model that only makes calls it may not make is called at most max_iterations (8) "
        "times in a turn, each told why",
        *[tool_call_stream("no_such_tool", "{}", call_id=f"call_{n}") for n in range(8)],
        checks=(requests(8),),
    ),
    "tool-call indexes that are absurd": ends(
        rt.STOP_REASON_TOOL_CALL,
        "an index is only a key: the lowest is the first call, kept",
        raw_sse(
            [
                tool_call_frame(2**63, "call_big", "list_files", "{}"),
                tool_call_frame(-1, "call_neg", "read_file", '{"path": "a.py"}'),
                sse_frame({}, "tool_calls"),
                DONE_FRAME,
            ]
        ),
        checks=(called("read_file", {"path": "a.py"}),),
    ),
    # Answers that are not answers.
    "an empty answer": fails(
        "MODEL_EMPTY_ANSWER",
        "no text and no tool call: nothing to record",
        text_stream(),
    ),
    "an answer of whitespace": fails(
        "MODEL_EMPTY_ANSWER",
        "whitespace says nothing either",
        text_stream(" \n\t "),
        checks=(kept_partial(" \n\t "),),
    ),
    "a 200 text/html body": fails(
        BAD,
        "a proxy's login page is no answer, and asking again gets the same page: not retried",
        whole_body(200, b"<html><body>proxy login</body></html>", "text/html"),
        checks=(requests(1),),
    ),
    "a 200 JSON body that is not a completion": fails(
        BAD,
        "JSON without choices is no answer",
        whole_body(200, b'{"object": "list", "data": []}', "application/json"),
    ),
    "a 200 JSON body that is an array": fails(
        BAD,
        "not even an object",
        whole_body(200, b"[1, 2, 3]", "application/json"),
    ),
    "a 200 JSON completion whose message is text": fails(
        BAD,
        "a choice without a message object",
        whole_body(200, b'{"choices": [{"message": "hi"}]}', "application/json"),
    ),
    "garbage SSE frames": fails(
        BAD,
        "an event that is not JSON cannot be read",
        raw_sse(
            [sse_frame({"content": "so far "}), b'data: {"choices": [ nonsense\n\n', DONE_FRAME]
        ),
        checks=(kept_partial("so far "),),
    ),
    "choices that are not objects": fails(
        BAD,
        "a choice must be a JSON object",
        raw_sse([b'data: {"choices": [null]}\n\n', DONE_FRAME]),
    ),
    "a JSON content type over an SSE body": fails(
        BAD,
        "read as one JSON completion, which it is not",
        whole_body(200, sse_frame({"content": "hi"}, "stop") + DONE_FRAME, "application/json"),
    ),
    "SSE events that are not objects": fails(
        BAD,
        "a chunk must be a JSON object",
        raw_sse([b"data: [1, 2]\n\n", DONE_FRAME]),
    ),
    "non-SSE lines around a valid answer": ends(
        rt.STOP_REASON_END_TURN,
        "lines without a known field are ignored, as the SSE rules say",
        raw_sse(
            [
                b"<html>\n\xff\xfe garbage\n",
                sse_frame({"content": "fine"}),
                b"event: weird\nretry: -1\nid: \x00\n: comment\n\n",
                sse_frame({}, "stop"),
                DONE_FRAME,
            ]
        ),
        checks=(answered("fine"),),
    ),
    "a flood of SSE comments before the answer": ends(
        rt.STOP_REASON_END_TURN,
        "each comment line is dropped as it ends: 2 MiB of them hold nothing",
        raw_sse([b": keep-alive " + b"." * 1000 + b"\n"] * 2048 + [*text_frames("after all")]),
        checks=(answered("after all"),),
    ),
    "reasoning and no answer": fails(
        "MODEL_EMPTY_ANSWER",
        "thinking is not an answer: the reasoning streamed, then nothing to record",
        raw_sse([sse_frame({"reasoning_content": "hmm, "}), sse_frame({}, "stop"), DONE_FRAME]),
        checks=(reasoned("hmm, "), kept_partial()),
    ),
    "an error object mid-stream": fails(
        "MODEL_STREAM_ERROR",
        "the endpoint says it failed: the error, and the text so far kept incomplete",
        raw_sse(
            [
                sse_frame({"content": "half an "}),
                b'data: {"error": {"message": "overloaded \\ud800", "type": "server_error"}}\n\n',
            ]
        ),
        checks=(kept_partial("half an "),),
    ),
    "an error object mid-stream saying the request is invalid": fails(
        "MODEL_REQUEST_REJECTED",
        "the endpoint refuses the request: asking again would not help",
        raw_sse([b'data: {"error": {"message": "bad", "type": "invalid_request_error"}}\n\n']),
        checks=(requests(1),),
    ),
    "text after [DONE]": ends(
        rt.STOP_REASON_END_TURN,
        "[DONE] ends the answer; what follows is not part of it",
        raw_sse(
            [sse_frame({"content": "before"}, "stop"), DONE_FRAME, sse_frame({"content": "after"})]
        ),
        checks=(answered("before"),),
    ),
    "missing [DONE] after a finish_reason": ends(
        rt.STOP_REASON_END_TURN,
        "the finish_reason says the answer is complete",
        text_stream("complete", done=False),
        checks=(answered("complete"),),
    ),
    "missing [DONE] and finish_reason": fails(
        "MODEL_STREAM_TRUNCATED",
        "nothing says the answer is complete: it may have been cut",
        raw_sse([sse_frame({"content": "maybe cut"})]),
        checks=(kept_partial("maybe cut"),),
    ),
    "a finish_reason that is absurd": ends(
        rt.STOP_REASON_END_TURN,
        "only recorded (in the model call's event): cut to 64 characters and repaired",
        text_stream("ok", finish=ABSURD_FINISH),
        checks=(answered("ok"), finish_reason_recorded(f"{FFFD}{NUL}\n" + "x" * 61)),
    ),
    "a finish_reason that is not a string": ends(
        rt.STOP_REASON_END_TURN,
        "ignored: [DONE] ends the answer",
        text_stream("ok", finish={"reason": ["stop"]}),
        checks=(answered("ok"), finish_reason_recorded("")),
    ),
    # The transport.
    "a stream cut mid-answer": fails(
        "MODEL_STREAM_INTERRUPTED",
        "the connection was lost after output: not retried (the client saw part of it)",
        drop_connection_after("cut right in the middle", 3, once=CUT),
        checks=(kept_partial("cut right in "), requests(1)),
        streamed=CUT,
    ),
    "a stream that trickles a line byte by byte": fails(
        "MODEL_IDLE_TIMEOUT",
        "bytes that complete no event are not output: the idle clock runs on",
        trickle([sse_frame({"content": "slow "})], b"x", interval=0.05),
        checks=(kept_partial("slow "),),
    ),
    "a response head that is not HTTP": fails(
        "MODEL_STREAM_INTERRUPTED",
        "a protocol error before any output: retried, and the same again fails the turn",
        raw_response(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        raw_response(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        checks=(requests(2),),
    ),
    "a response header of 100 KB": fails(
        "MODEL_STREAM_INTERRUPTED",
        "no client reads a header without a bound: a protocol error, retried, then the end",
        raw_response(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 100_000 + b"\r\n\r\n"),
        raw_response(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"j" * 100_000 + b"\r\n\r\n"),
        checks=(requests(2),),
    ),
    "a body shorter than its Content-Length": fails(
        "MODEL_STREAM_INTERRUPTED",
        "the connection closed before the body's end (and any output): retried, then the end",
        *[
            raw_response(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9999"
                b'\r\n\r\ndata: {"choices": [{"delta": {"content": "sho'
            )
        ]
        * 2,
        checks=(requests(2),),
    ),
    "a stream that stalls": fails(
        "MODEL_IDLE_TIMEOUT",
        "silence past AGENT_RUNTIME_LLM_IDLE_TIMEOUT mid-answer ends the call",
        stall_after("half "),
        checks=(kept_partial("half "), requests(1)),
    ),
    "429 with a Retry-After that is a superscript digit": ends(
        rt.STOP_REASON_END_TURN,
        '"\\xb2" is "²" in latin-1, a digit to str.isdigit() but no delay (it failed the turn '
        "as a bug): the usual backoff, then the retry",
        http_error(429, headers={"Retry-After": "\xb2"}),
        text_answer("ok"),
        checks=(answered("ok"), requests(2)),
    ),
    "429 every time with an undecodable Retry-After": fails(
        "MODEL_HTTP_429",
        "the header is not UTF-8: unreadable, so the usual backoff; the last 429 fails the turn",
        http_error(429, headers={"Retry-After": "\xff\xfe"}),
        http_error(429, headers={"Retry-After": "\xff\xfe"}),
        checks=(requests(2),),
    ),
    "a body that claims gzip and is not": fails(
        BAD,
        "an undecodable body is no answer",
        whole_body(
            200, b"not gzip at all", "text/event-stream", headers={"Content-Encoding": "gzip"}
        ),
    ),
    "an SSE event of endless data lines": fails(
        TOO_LARGE,
        "an event's data is bounded like a line",
        raw_sse([b"data: " + b"w" * (8 * KIB) + b"\n"] * 20),
    ),
    "a stream kept warm by pings only": fails(
        "MODEL_IDLE_TIMEOUT",
        "comments are not output: they do not restart the idle clock",
        stall_after("thinking ", ping_interval=0.05),
        checks=(kept_partial("thinking "),),
    ),
    "5xx then success": ends(
        rt.STOP_REASON_END_TURN,
        "nothing was output before the 503: retried, and the retry answers",
        http_error(503),
        text_answer("second time lucky"),
        checks=(answered("second time lucky"), requests(2)),
    ),
    "5xx every time": fails(
        "MODEL_HTTP_503",
        "retried up to AGENT_RUNTIME_LLM_MAX_ATTEMPTS, then the turn fails",
        http_error(503),
        http_error(503),
        checks=(requests(2),),
    ),
    "429 with Retry-After": ends(
        rt.STOP_REASON_END_TURN,
        "retried after the delay the endpoint asked for",
        http_error(429, headers={"Retry-After": "0"}),
        text_answer("ok"),
        checks=(answered("ok"), requests(2)),
    ),
    "429 with a Retry-After of a year": fails(
        "MODEL_HTTP_429",
        "longer than the runtime waits: fails at once (retryable: the client may come back)",
        http_error(429, headers={"Retry-After": str(365 * 24 * 3600)}),
        checks=(requests(1),),
    ),
}
