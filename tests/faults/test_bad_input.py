"""Fault injection: bad input. Whatever a client sends, the runtime answers with a status it
means (never INTERNAL or UNKNOWN), keeps serving, and a refused request changes nothing.

Two fuzzers against one real runtime (real gRPC port, a real SQLite file or PostgreSQL
schema, real HTTP model endpoint answering "ok"):
(a) hypothesis-built, well-typed requests for every RPC: odd strings (empty, NUL, unicode,
    ~300 KB), ids that exist and ids that do not, undefined enum numbers, forged page tokens,
    extreme page sizes and cursors, generation settings out of every range, declared tools
    with hostile names and JSON Schemas, update masks naming anything;
(b) random bytes (and mangled valid encodings) as the serialized request of every method,
    through a generic client.

The runtime runs in a background thread with its own event loop; the synchronous
hypothesis tests hand it coroutines (the client calls, and the reads that count the rows).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_runtime import bootstrap
from agent_runtime.config import Settings
from agent_runtime.domain.model import SESSION_ID_PATTERN
from agent_runtime.infrastructure.db.engine import create_engine
from agent_runtime.v1 import agent_pb2 as ag
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import (
    agent_runtime_pb2_grpc,
    session_pb2_grpc,
)
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us
from tests.faults.checks import TABLES
from tests.support.databases import BACKENDS
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.migrated_databases import migrated_database_for

T = TypeVar("T")
Code = grpc.StatusCode

ALLOWED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.ABORTED,
    Code.OUT_OF_RANGE,
    Code.UNIMPLEMENTED,
    Code.RESOURCE_EXHAUSTED,
    Code.ALREADY_EXISTS,
    Code.CANCELLED,  # only ever our own cancel of an idle WatchEvents stream
}
CALL_TIMEOUT = 20.0
NAN = float("nan")
# WatchEvents follows live events forever: after its initial metadata, wait this long for a
# first event or an error, then cancel. An error (bad cursor, failed query) comes at once.
WATCH_FIRST_EVENT_SECONDS = 0.1

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# -- the runtime under test, in a thread of its own --------------------------------------------


# The seeded database (see Runtime._seed), so the fuzzers reach past the not-found checks.
SEEDED_SESSIONS = ["fz-text", "fz-call", "fz-approval", "fz-deleted", "fz-spare-1", "fz-spare-2"]
SEEDED_CALLS = ["call_r", "call_w"]
SEEDED_CLIENT_MESSAGE_IDS = ["cm-1", "cm-2"]
SEEDED_TURNS: list[str] = []  # filled in by the seeding


class Runtime:
    """A runtime and a client channel on a loop running in a background thread."""

    def __init__(self, backend: str, db_path: Path) -> None:
        self._backend = backend
        self._db_path = db_path
        self._resources = AsyncExitStack()
        self._engine: AsyncEngine | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fuzzed-runtime", daemon=True
        )
        self._model = FakeModelServer()
        self._running: bootstrap.RunningRuntime | None = None
        self._channel: grpc.aio.Channel | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def channel(self) -> grpc.aio.Channel:
        assert self._channel is not None
        return self._channel

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    def stop(self) -> None:
        try:
            if self._thread.is_alive():
                self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    async def _start(self) -> None:
        url = await self._resources.enter_async_context(
            migrated_database_for(self._backend, str(self._db_path))
        )
        await self._model.start()
        self._model.default_response = text_answer("ok")
        self._running = await bootstrap.start(
            Settings.model_validate(
                {
                    "server": {"listen": "127.0.0.1:0"},
                    "database": {"url": url},
                    "model": {
                        "base_url": self._model.base_url,
                        "api_key": "sk-test",
                        "retry_base_delay": 0.01,
                    },
                }
            )
        )
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{self._running.port}")
        self._engine = create_engine(url)
        await self._seed()

    async def _stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._running is not None:
            await self._running.stop(grace=None)
        if self._engine is not None:
            await self._engine.dispose()
        await self._model.stop()
        await self._resources.aclose()

    async def row_counts(self) -> dict[str, int]:
        assert self._engine is not None
        async with self._engine.connect() as connection:
            return {
                table: int(
                    (await connection.execute(text(f"SELECT count(*) FROM {table}"))).one()[0]
                )
                for table in TABLES
            }

    async def _seed(self) -> None:
        """A session per state a turn can leave: answered, tool call out, approval pending,
        deleted; and two spare sessions for DeleteSession to delete."""
        runtime = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(self.channel)
        sessions = session_pb2_grpc.SessionServiceStub(self.channel)

        async def turn(request: rt.StreamMessageRequest) -> None:
            async for chunk in runtime.StreamMessage(request, timeout=CALL_TIMEOUT):
                if chunk.HasField("turn_started"):
                    SEEDED_TURNS.append(chunk.turn_id)

        def say(session_id: str, text: str, cmid: str = "") -> rt.StreamMessageRequest:
            return rt.StreamMessageRequest(
                session_id=session_id,
                client_message_id=cmid,
                user_message=rt.UserMessage(content=text),
            )

        await turn(say("fz-text", "hello", "cm-1"))
        self._model.enqueue(tool_call_answer("read_file", {"path": "a.py"}, call_id="call_r"))
        await turn(say("fz-call", "read a.py", "cm-2"))
        self._model.enqueue(
            tool_call_answer("write_file", {"path": "a.md", "content": "x"}, call_id="call_w")
        )
        await turn(say("fz-approval", "write a.md"))
        await turn(say("fz-deleted", "soon gone"))
        await sessions.DeleteSession(ses.DeleteSessionRequest(session_id="fz-deleted"))
        for spare in ("fz-spare-1", "fz-spare-2"):
            await sessions.CreateSession(ses.CreateSessionRequest(session_id=spare, title="t"))


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    running = Runtime(request.param, tmp_path_factory.mktemp("bad_input") / "runtime.db")
    try:
        running.start()
        yield running
    finally:
        running.stop()


# -- calling, and the properties every call must have ------------------------------------------

SERVICE = "/agent_runtime.v1."
METHODS: dict[str, tuple[str, Any]] = {
    # method: how it answers (unary, a stream read to its end, a watch), a valid request
    "AgentRuntimeService/StreamMessage": (
        "stream",
        rt.StreamMessageRequest(session_id="fz-text", user_message=rt.UserMessage(content="hi")),
    ),
    "AgentRuntimeService/ResumeStream": (
        "stream",
        rt.ResumeStreamRequest(session_id="fz-text", turn_id="turn_0", after_seq=1),
    ),
    "AgentRuntimeService/CancelTurn": (
        "unary",
        rt.CancelTurnRequest(session_id="fz-text", turn_id="turn_0"),
    ),
    "SessionService/CreateSession": ("unary", ses.CreateSessionRequest(session_id="x", title="t")),
    "SessionService/GetSession": ("unary", ses.GetSessionRequest(session_id="fz-text")),
    "SessionService/UpdateSession": (
        "unary",
        ses.UpdateSessionRequest(session=ses.Session(session_id="fz-spare-2", title="t")),
    ),
    "SessionService/ListSessions": ("unary", ses.ListSessionsRequest(page_size=2)),
    "SessionService/DeleteSession": ("unary", ses.DeleteSessionRequest(session_id="fz-spare-1")),
    "SessionService/ListMessages": (
        "unary",
        ses.ListMessagesRequest(session_id="fz-text", page_size=1),
    ),
    "SessionService/ListPendingApprovals": (
        "unary",
        ses.ListPendingApprovalsRequest(session_id="fz-approval", page_size=1),
    ),
    "SessionService/ListAgentSwitches": (
        "unary",
        ses.ListAgentSwitchesRequest(session_id="fz-text", page_size=1),
    ),
    "UsageService/GetUsage": (
        "unary",
        us.GetUsageRequest(group_by=us.USAGE_GROUP_BY_MODEL, page_size=1),
    ),
    "AgentService/ListAgents": ("unary", ag.ListAgentsRequest()),
    "EventService/WatchEvents": ("watch", ev.WatchEventsRequest(session_id="fz-text")),
}


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


async def _call(channel: grpc.aio.Channel, method: str, payload: bytes) -> Outcome:
    """Send serialized request bytes through a generic client (no client-side checks)."""
    kind = METHODS[method][0]
    path = SERVICE + method
    try:
        if kind == "unary":
            await channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
        elif kind == "stream":  # a turn or a replay: read it to its end
            async for _ in channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT):
                pass
        else:
            return await _first_event(channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT))
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "")
    return Outcome(Code.OK, "")


async def _first_event(call: Any) -> Outcome:
    """WatchEvents: the first event or the error, then cancel."""
    await asyncio.wait_for(call.initial_metadata(), CALL_TIMEOUT)
    # No event in time: an idle stream, as it should be when nothing matches.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(call.read(), WATCH_FIRST_EVENT_SECONDS)
    if call.done():
        return Outcome(await call.code(), await call.details() or "")
    call.cancel()
    return Outcome(Code.OK, "")


async def _serving(channel: grpc.aio.Channel) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(reply.status)


def check(runtime: Runtime, method: str, payload: bytes) -> None:
    """The properties: a meant status, still serving, and a refusal wrote nothing."""
    before = runtime.run(runtime.row_counts())
    outcome = runtime.run(_call(runtime.channel, method, payload))
    event(outcome.code.name)  # --hypothesis-show-statistics: which paths the fuzzing reached
    assert outcome.code in ALLOWED, f"{outcome.code.name}: {outcome.details}"
    # The status the server meant must reach the client: a refusal that echoes a huge input
    # into its message or ErrorInfo overflows the client's metadata limit, and the client
    # gets RESOURCE_EXHAUSTED from its own library instead.
    assert "metadata size exceeds" not in outcome.details, outcome.details
    assert runtime.run(_serving(runtime.channel)) == health_pb2.HealthCheckResponse.SERVING
    if outcome.code not in (Code.OK, Code.CANCELLED):
        after = runtime.run(runtime.row_counts())
        assert after == before, f"refused with {outcome.code.name} but wrote {before} -> {after}"


# -- strategies ---------------------------------------------------------------------------------


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


huge_strings = st.builds(_repeat, st.text(min_size=1, max_size=3), st.integers(1_000, 300_000))
odd_strings = st.sampled_from(["", " ", "\x00", "a\x00b", "\n", "é", "🤖" * 3, "\u202e", "null"])
strings = st.one_of(odd_strings, st.text(max_size=40), huge_strings)


def _pick(pool: Callable[[], list[str]]) -> st.SearchStrategy[str]:
    """An id from a pool filled in at run time (the ids the seeded runtime made)."""
    return st.integers(min_value=0).map(lambda i: pool()[i % len(pool())] if pool() else "")


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Three times in four a plausible value, else a bad one: a request with one or two odd
    fields gets past the others' checks and reaches deeper code."""
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else good)


words = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)
session_ids = mostly(
    st.one_of(st.sampled_from(SEEDED_SESSIONS), st.from_regex(SESSION_ID_PATTERN, fullmatch=True)),
    strings,
)
turn_ids = mostly(st.one_of(_pick(lambda: SEEDED_TURNS), st.just("turn_0")), strings)
call_ids = mostly(st.sampled_from([*SEEDED_CALLS, "call_x"]), strings)
client_message_ids = mostly(
    st.one_of(st.just(""), st.sampled_from(SEEDED_CLIENT_MESSAGE_IDS), words), strings
)
agent_names = mostly(
    st.sampled_from(["", "coder", "architect", "debug", "ask", "orchestrator"]),
    st.one_of(st.just("nobody"), strings),
)
contents = mostly(words, strings)
uint32s = st.one_of(
    st.sampled_from([0, 1, 2, 1000, 1001, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1)
)
uint64s = st.one_of(
    st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
enum_numbers = st.one_of(st.integers(-3, 20), st.sampled_from([-(2**31), 2**31 - 1]))

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _forged_token(kind: str, values: list[Any]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _stamp(at: datetime, offset_minutes: int | None) -> str:
    if offset_minutes is None:
        return at.isoformat()
    return at.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))).isoformat()


# Any moment from year 1 to 9999, naive or with any UTC offset, as a token would carry it.
timestamps = st.builds(_stamp, st.datetimes(), st.none() | st.integers(-1439, 1439))
extreme_timestamps = st.sampled_from(
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2024-01-01T00:00:00"]
)
big_integers = st.one_of(st.integers(), st.integers(2**62, 2**80), st.integers(-(2**80), -1))
page_tokens = st.one_of(
    strings,
    # Tokens shaped like the server's own (base64 JSON [kind, *values]) with values it never
    # issued: the keyset values reach the SQL query.
    st.builds(lambda v: _forged_token("pos", [v]), st.one_of(big_integers, json_values)),
    st.builds(
        _forged_token,
        st.sampled_from(["ses", "apr"]),
        st.tuples(
            st.one_of(extreme_timestamps, timestamps, json_values),
            st.one_of(session_ids, json_values),
        ).map(list),
    ),
    # Switch keys (64-bit in the store) and usage group keys (text).
    st.builds(lambda v: _forged_token("swi", [v]), st.one_of(big_integers, json_values)),
    st.builds(lambda v: _forged_token("usg", [v]), st.one_of(strings, json_values)),
    st.builds(
        _forged_token,
        st.sampled_from(["pos", "ses", "apr", "swi", "usg", "x"]),
        st.lists(json_values, max_size=3),
    ),
)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


structs = st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(_struct)


def _tool_result(call_id: str, content: str, is_error: bool) -> dict[str, Any]:
    return {"tool_result": rt.ToolResult(call_id=call_id, content=content, is_error=is_error)}


def _approval(
    call_id: str, verdict: int, edited: struct_pb2.Struct | None, feedback: str
) -> dict[str, Any]:
    decision = rt.ApprovalDecision(
        call_id=call_id, decision=rt.Decision.ValueType(verdict), feedback=feedback
    )
    if edited is not None:
        decision.edited_arguments.CopyFrom(edited)
    return {"approval_decision": decision}


def _generation(
    temperature: float | None,
    top_p: float | None,
    max_output_tokens: int | None,
    stop: list[str],
    seed: int | None,
    reasoning_effort: str,
    tool_choice: int | str | None,
) -> mc.GenerationConfig:
    config = mc.GenerationConfig(
        temperature=temperature,
        top_p=top_p,
        max_output_tokens=max_output_tokens,
        stop=stop,
        seed=seed,
        reasoning_effort=reasoning_effort,
    )
    if isinstance(tool_choice, int):
        config.tool_choice.mode = mc.ToolChoiceMode.ValueType(tool_choice)
    elif tool_choice is not None:
        config.tool_choice.tool_name = tool_choice
    return config


doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e308])
)
generations = st.builds(
    _generation,
    st.none() | doubles,
    st.none() | doubles,
    st.none() | uint32s,
    st.lists(mostly(st.sampled_from(["END", "\n\n"]), strings), max_size=6),
    st.none() | st.integers(-(2**63), 2**63 - 1),
    mostly(st.sampled_from(["", "low", "high"]), strings),
    st.none() | enum_numbers | mostly(st.sampled_from(["ide_lint", "read_file"]), strings),
)


def _huge_schema() -> struct_pb2.Struct:
    """Over the 64 KiB a declared schema may have (built here: a strategy's repr stays short)."""
    return _struct({"type": "object", "description": "x" * 70_000})


def _schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    node = schema
    for _ in range(depth):
        child: dict[str, Any] = {"type": "object"}
        node["properties"] = {"x": child}
        node = child
    return schema


_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    {"type": "objekt"},
    {"type": "array"},
    {"type": "object", "$ref": "https://example.com/schema.json"},
    {"type": "object", "properties": {"p": {"$ref": "#/$defs/missing"}}},
    {"type": "object", "properties": {"p": {"type": "string", "pattern": "("}}},
    {"$schema": "http://example.com/not-a-draft", "type": "object"},
    _schema(10),  # 21 levels: one past the limit, within what protobuf carries
]
schemas = st.one_of(
    st.none(), structs, st.sampled_from(_SCHEMAS).map(_struct), st.builds(_huge_schema)
)


def _tool(
    name: str, description: str, parameters: struct_pb2.Struct | None, approval: bool | None
) -> mc.ToolDefinition:
    tool = mc.ToolDefinition(name=name, description=description, requires_approval=approval)
    if parameters is not None:
        tool.parameters.CopyFrom(parameters)
    return tool


declared_tools = st.lists(
    st.builds(
        _tool,
        mostly(st.sampled_from(["ide_lint", "ide_open", "read_file"]), strings),
        mostly(st.just("a tool"), strings),
        schemas,
        st.none() | st.booleans(),
    ),
    max_size=4,
)


def _stream_message(
    session_id: str,
    cmid: str,
    agent: str,
    model: str,
    chosen: dict[str, Any],
    generation: mc.GenerationConfig | None = None,
    tools: list[mc.ToolDefinition] | None = None,
) -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id,
        client_message_id=cmid,
        agent=agent,
        model=model,
        generation=generation,
        tools=tools,
        **chosen,
    )


inputs: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda content: {"user_message": rt.UserMessage(content=content)}, contents),
    st.builds(_tool_result, call_ids, contents, st.booleans()),
    st.builds(
        _approval, call_ids, mostly(st.integers(1, 3), enum_numbers), st.none() | structs, contents
    ),
    st.builds(
        lambda agent, reason: {"switch_agent": rt.SwitchAgent(agent=agent, reason=reason)},
        agent_names,
        contents,
    ),
    st.just({}),  # no input at all
)
stream_message_requests = st.builds(
    _stream_message,
    session_ids,
    client_message_ids,
    agent_names,
    mostly(st.just(""), strings),  # model
    inputs,
    mostly(st.none(), generations),
    mostly(st.none(), declared_tools),
)


# -- (a) well-typed requests, every RPC --------------------------------------------------------


@FUZZ
@given(request=stream_message_requests)
@example(  # a NaN in a Struct: valid protobuf, not valid JSON
    request=rt.StreamMessageRequest(
        session_id="fz-approval",
        approval_decision=rt.ApprovalDecision(
            call_id="call_w", decision=rt.DECISION_EDIT, edited_arguments=_struct({"x": NAN})
        ),
    )
)
@example(
    request=_stream_message(
        "fz-text", "", "a" * 20_000, "", {"user_message": rt.UserMessage(content="hi")}
    )
)
def test_stream_message(fuzzed: Runtime, request: rt.StreamMessageRequest) -> None:
    check(fuzzed, "AgentRuntimeService/StreamMessage", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        rt.ResumeStreamRequest, session_id=session_ids, turn_id=turn_ids, after_seq=uint64s
    )
)
@example(request=rt.ResumeStreamRequest(session_id="fz-text", turn_id="t" * 20_000))
def test_resume_stream(fuzzed: Runtime, request: rt.ResumeStreamRequest) -> None:
    check(fuzzed, "AgentRuntimeService/ResumeStream", request.SerializeToString())


@FUZZ
@given(request=st.builds(rt.CancelTurnRequest, session_id=session_ids, turn_id=turn_ids))
@example(request=rt.CancelTurnRequest(session_id="fz-text", turn_id="t" * 20_000))
def test_cancel_turn(fuzzed: Runtime, request: rt.CancelTurnRequest) -> None:
    check(fuzzed, "AgentRuntimeService/CancelTurn", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        ses.CreateSessionRequest,
        session_id=st.one_of(st.just(""), session_ids),
        title=contents,
        agent=agent_names,
    )
)
@example(request=ses.CreateSessionRequest(agent="a" * 20_000))
def test_create_session(fuzzed: Runtime, request: ses.CreateSessionRequest) -> None:
    check(fuzzed, "SessionService/CreateSession", request.SerializeToString())


def _update_session(
    session_id: str,
    title: str,
    instructions: str,
    agent: str,
    tools: list[mc.ToolDefinition],
    generation: mc.GenerationConfig | None,
    paths: list[str] | None,
    grants: list[ses.ApprovalGrant] | None = None,
) -> ses.UpdateSessionRequest:
    request = ses.UpdateSessionRequest(
        session=ses.Session(
            session_id=session_id,
            title=title,
            instructions=instructions,
            agent=agent,
            tools=tools,
            generation=generation,
            approval_grants=grants,
        )
    )
    if paths is not None:
        request.update_mask.paths.extend(paths)
    return request


mask_paths = st.lists(
    mostly(
        st.sampled_from(
            [
                "title",
                "instructions",
                "agent",
                "tools",
                "generation",
                "generation.seed",
                "approval_grants",
                "*",
            ]
        ),
        st.one_of(st.sampled_from(["message_count", "generation.top_k", "session_id"]), strings),
    ),
    max_size=4,
)


@FUZZ
@given(
    request=st.builds(
        _update_session,
        # The spares only: the other fuzzers need the seeded sessions as they were.
        mostly(st.sampled_from(["fz-spare-1", "fz-spare-2", "fz-deleted"]), session_ids),
        contents,
        contents,
        agent_names,
        declared_tools,
        st.none() | generations,
        st.none() | mask_paths,
        st.lists(
            st.builds(
                ses.ApprovalGrant,
                grant_id=mostly(st.just("grt_1"), strings),
                tool_name=st.just("") | strings,
                when=st.dictionaries(strings, strings, max_size=2),
            ),
            max_size=3,
        ),
    )
)
@example(
    request=_update_session("fz-spare-2", "", "", "", [], None, ["instructions", "*", "x" * 20_000])
)
@example(
    request=_update_session(
        "fz-spare-2", "", "", "", [], None, ["approval_grants"], [ses.ApprovalGrant()]
    )
)
def test_update_session(fuzzed: Runtime, request: ses.UpdateSessionRequest) -> None:
    check(fuzzed, "SessionService/UpdateSession", request.SerializeToString())


@FUZZ
@given(request=st.builds(ses.GetSessionRequest, session_id=session_ids))
def test_get_session(fuzzed: Runtime, request: ses.GetSessionRequest) -> None:
    check(fuzzed, "SessionService/GetSession", request.SerializeToString())


@FUZZ
@given(request=st.builds(ses.ListSessionsRequest, page_size=uint32s, page_token=page_tokens))
@example(
    request=ses.ListSessionsRequest(
        page_token=_forged_token("ses", ["0001-01-01T00:00:00+05:00", "fz-text"])
    )
)
def test_list_sessions(fuzzed: Runtime, request: ses.ListSessionsRequest) -> None:
    check(fuzzed, "SessionService/ListSessions", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        ses.DeleteSessionRequest,
        # Not the seeded sessions the other fuzzers need: the spares, and anything else.
        session_id=st.one_of(
            st.sampled_from(["fz-spare-1", "fz-spare-2", "fz-deleted"]),
            st.from_regex(SESSION_ID_PATTERN, fullmatch=True),
            strings,
        ),
    )
)
def test_delete_session(fuzzed: Runtime, request: ses.DeleteSessionRequest) -> None:
    check(fuzzed, "SessionService/DeleteSession", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        ses.ListMessagesRequest, session_id=session_ids, page_size=uint32s, page_token=page_tokens
    )
)
@example(
    request=ses.ListMessagesRequest(session_id="fz-text", page_token=_forged_token("pos", [2**70]))
)
@example(  # JSON true passes for an int in Python
    request=ses.ListMessagesRequest(session_id="fz-text", page_token=_forged_token("pos", [True]))
)
def test_list_messages(fuzzed: Runtime, request: ses.ListMessagesRequest) -> None:
    check(fuzzed, "SessionService/ListMessages", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        ses.ListPendingApprovalsRequest,
        session_id=session_ids,
        page_size=uint32s,
        page_token=page_tokens,
    )
)
@example(
    request=ses.ListPendingApprovalsRequest(
        session_id="fz-approval",
        page_token=_forged_token("apr", ["9999-12-31T23:59:59-05:00", "call_w"]),
    )
)
def test_list_pending_approvals(fuzzed: Runtime, request: ses.ListPendingApprovalsRequest) -> None:
    check(fuzzed, "SessionService/ListPendingApprovals", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        ses.ListAgentSwitchesRequest,
        session_id=session_ids,
        page_size=uint32s,
        page_token=page_tokens,
    )
)
@example(
    request=ses.ListAgentSwitchesRequest(
        session_id="fz-text", page_token=_forged_token("swi", [2**63])
    )
)
def test_list_agent_switches(fuzzed: Runtime, request: ses.ListAgentSwitchesRequest) -> None:
    check(fuzzed, "SessionService/ListAgentSwitches", request.SerializeToString())


@FUZZ
@given(
    request=st.builds(
        us.GetUsageRequest,
        group_by=mostly(st.integers(0, 3), enum_numbers),
        page_size=uint32s,
        page_token=page_tokens,
    )
)
@example(
    request=us.GetUsageRequest(
        group_by=us.USAGE_GROUP_BY_MODEL, page_token=_forged_token("usg", ["m\x00"])
    )
)
def test_get_usage(fuzzed: Runtime, request: us.GetUsageRequest) -> None:
    check(fuzzed, "UsageService/GetUsage", request.SerializeToString())


@settings(FUZZ, max_examples=3)
@given(request=st.just(ag.ListAgentsRequest()))
def test_list_agents(fuzzed: Runtime, request: ag.ListAgentsRequest) -> None:
    check(fuzzed, "AgentService/ListAgents", request.SerializeToString())


def _watch_request(session_id: str, types: list[int], after: int | None) -> ev.WatchEventsRequest:
    request = ev.WatchEventsRequest(
        session_id=session_id, event_types=[ev.EventType.ValueType(t) for t in types]
    )
    if after is not None:
        request.after_event_id = after
    return request


@FUZZ
@given(
    request=st.builds(
        _watch_request,
        st.one_of(st.just(""), session_ids),
        mostly(st.lists(st.integers(1, 12), max_size=3), st.lists(enum_numbers, max_size=3)),
        st.one_of(st.none(), uint64s),
    )
)
@example(request=_watch_request("", [], 2**63))  # a valid uint64 beyond SQLite's INTEGER
def test_watch_events(fuzzed: Runtime, request: ev.WatchEventsRequest) -> None:
    check(fuzzed, "EventService/WatchEvents", request.SerializeToString())


# -- (b) raw bytes, every method -----------------------------------------------------------------


@dataclass(frozen=True)
class Mangling:
    """Turns a valid encoding into bad bytes: replaced outright, truncated, extended, or with
    bytes overwritten (offsets taken modulo the length)."""

    how: str
    data: bytes = b""
    offsets: tuple[int, ...] = ()

    def apply(self, valid: bytes) -> bytes:
        if self.how == "replace" or not valid:
            return self.data
        if self.how == "truncate":
            return valid[: self.offsets[0] % len(valid)]
        if self.how == "append":
            return valid + self.data
        mangled = bytearray(valid)
        for at, byte in zip(self.offsets, self.data, strict=False):
            mangled[at % len(mangled)] = byte
        return bytes(mangled)


offsets = st.lists(st.integers(0, 1000), min_size=1, max_size=3).map(tuple)
manglings = st.one_of(
    st.builds(Mangling, st.just("replace"), st.binary(max_size=64)),
    st.builds(Mangling, st.just("truncate"), st.just(b""), offsets),
    st.builds(Mangling, st.just("append"), st.binary(min_size=1, max_size=16)),
    st.builds(Mangling, st.just("flip"), st.binary(min_size=1, max_size=3), offsets),
)


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(FUZZ, max_examples=30)
@given(mangling=manglings)
@example(mangling=Mangling("replace", b"\x08\xff"))  # field 1, a varint never terminated
def test_raw_bytes(fuzzed: Runtime, method: str, mangling: Mangling) -> None:
    payload = mangling.apply(METHODS[method][1].SerializeToString())
    check(fuzzed, method, payload)
