"""Fault injection: kill -9. A real server process on a file database is SIGKILLed at random
moments (seeded, so reproducible) while four clients run turns on four sessions, and
restarted each time with the same instance id.

What a crash must never do, checked after every restart and at the end:
- lose an input whose TurnStarted a client received, an answer (AssistantMessage,
  ToolCall) a client received, or an approval a client was asked for and has not decided;
  or store anything twice (a retried request, same client_message_id, must not duplicate
  its message);
- leave a session busy or a turn RUNNING once the restarted server is up;
- leave a turn without its end: a retry of a turn the kill interrupted replays it ending with
  Error{TURN_INTERRUPTED} and TurnCompleted;
- leave a history an OpenAI-style provider would refuse (a tool call without its result, a
  result without its call), or with holes or repeats in its positions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc, session_pb2_grpc
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.checks import all_messages, message_problems, turn_statuses
from tests.support.fake_model_server import (
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
)
from tests.support.grpc_helpers import decision, tool_result, user_message
from tests.support.server_process import ServerProcess

SEED = 1234
KILLS = 4
MIN_COMPLETED_TURNS = 50
SESSIONS = [f"kill9-{n}" for n in range(4)]
# Random delay before each kill, seconds: the injected fault (not synchronisation).
KILL_AFTER = (0.3, 1.2)
# The model streams each answer as this many SSE frames, this far apart (its behaviour, not
# synchronisation): a turn takes ~0.1 s, so kills land mid-stream.
FRAMES = 10
FRAME_GAP = 0.01
READ_WORD = "please read"
WRITE_WORD = "please write"
RPC_TIMEOUT = 30.0


# -- the model ----------------------------------------------------------------------------------


def _frame(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-kill9",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def slow_model() -> ScriptedResponse:
    """A user message with READ_WORD gets a read_file call (runs at once), one with WRITE_WORD
    a write_file call (needs approval), anything else a text answer; all streamed over
    FRAMES frames with short pauses. Call ids are unique."""
    call_numbers = itertools.count(1)

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        last = request["messages"][-1]
        asked = str(last.get("content")) if last.get("role") == "user" else ""
        tool = "read_file" if READ_WORD in asked else "write_file" if WRITE_WORD in asked else ""
        await out.start_stream()
        await out.send_event(_frame({"role": "assistant", "content": ""}))
        if tool:
            call_id = f"call_k{next(call_numbers)}"
            path = f"src/{call_id}.py"
            args = {"path": path} if tool == "read_file" else {"path": path, "content": "x"}
            arguments = json.dumps(args)
            first = {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            await out.send_event(_frame({"tool_calls": [first]}))
            size = -(-len(arguments) // FRAMES)
            for start in range(0, len(arguments), size):
                await asyncio.sleep(FRAME_GAP)
                piece = {"index": 0, "function": {"arguments": arguments[start : start + size]}}
                await out.send_event(_frame({"tool_calls": [piece]}))
            finish = "tool_calls"
        else:
            for n in range(FRAMES):
                await asyncio.sleep(FRAME_GAP)
                await out.send_event(_frame({"content": f"word{n} "}))
            finish = "stop"
        await out.send_event(_frame({}, finish))
        await out.send_event("[DONE]")
        await out.end_stream()

    return ScriptedResponse(respond, "slow_model")


# -- the server under fire ----------------------------------------------------------------------


class Servers:
    """The current server process; `ready` is clear while it is down (killed, restarting,
    being checked), and `generation` counts the kills, so a client can tell a failure the
    kill caused from any other."""

    def __init__(self, db_path: Path, model_url: str) -> None:
        self.db_path = db_path
        self._env = {
            "AGENT_RUNTIME_LLM_BASE_URL": model_url,
            "AGENT_RUNTIME_INSTANCE_ID": "kill9-instance",
            "AGENT_RUNTIME_LLM_RETRY_BASE_DELAY": "0.01",
        }
        self.current = ServerProcess(db_path, env=self._env)
        self.ready = asyncio.Event()
        self.generation = 0
        self.exit_codes: list[int] = []

    async def start(self) -> None:
        self.current = ServerProcess(self.db_path, env=self._env)
        await self.current.start()

    async def kill(self) -> None:
        self.ready.clear()
        self.generation += 1
        self.exit_codes.append(await self.current.kill_hard())


@dataclass
class Record:
    """What the clients were told, and what happened to their requests."""

    # (session_id, turn_id, input_message_id) of every TurnStarted received
    started: set[tuple[str, str, str]] = field(default_factory=set)
    # message_id -> session_id of every AssistantMessage and ToolCall received
    answers: dict[str, str] = field(default_factory=dict)
    # (session_id, call_id) of approvals asked for and not decided yet: no decision was sent
    awaiting_approval: set[tuple[str, str]] = field(default_factory=set)
    approvals: int = 0
    completed: int = 0
    cut: int = 0  # requests a kill broke off
    replayed_interrupted: int = 0  # retries that replayed a turn the kill interrupted
    problems: list[str] = field(default_factory=list)


async def _stream(address: str, request: rt.StreamMessageRequest) -> AsyncIterator[rt.StreamChunk]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_runtime_pb2_grpc.AgentRuntimeServiceStub(channel)
        async for chunk in stub.StreamMessage(request, timeout=RPC_TIMEOUT):
            yield chunk


async def send(
    servers: Servers, record: Record, request: rt.StreamMessageRequest
) -> list[rt.StreamChunk]:
    """One request, retried with the same client_message_id while kills cut it off.
    Returns the chunks of the last attempt."""
    for attempt in range(KILLS + 2):
        await servers.ready.wait()
        generation = servers.generation
        chunks: list[rt.StreamChunk] = []
        try:
            async for chunk in _stream(servers.current.address, request):
                chunks.append(chunk)
                if chunk.HasField("turn_started"):
                    started = chunk.turn_started
                    record.started.add(
                        (request.session_id, started.turn_id, started.input_message_id)
                    )
                elif chunk.HasField("assistant_message"):
                    record.answers[chunk.assistant_message.message_id] = request.session_id
                elif chunk.HasField("tool_call"):
                    record.answers[chunk.tool_call.message_id] = request.session_id
                elif chunk.HasField("error") and chunk.error.reason != "TURN_INTERRUPTED":
                    record.problems.append(f"{request.client_message_id}: error chunk {chunk}")
        except grpc.aio.AioRpcError as error:
            if servers.generation != generation or not servers.ready.is_set():
                record.cut += 1
                continue  # the kill did that: retry on the restarted server
            record.problems.append(
                f"{request.client_message_id}: {error.code().name} {error.details()} with no kill"
            )
            return chunks
        kinds = [c.WhichOneof("chunk") for c in chunks]
        interrupted = [c for c in chunks if c.error.reason == "TURN_INTERRUPTED"]
        if not chunks or kinds[-1] != "turn_completed":
            record.problems.append(f"{request.client_message_id}: no TurnCompleted: {kinds}")
        elif not interrupted:
            record.completed += 1
        elif attempt > 0 and kinds[-2:] == ["error", "turn_completed"]:
            record.replayed_interrupted += 1  # a retry of a turn the kill interrupted
        else:
            record.problems.append(f"{request.client_message_id}: interrupted: {kinds}")
        return chunks
    record.problems.append(f"{request.client_message_id}: cut off on every attempt")
    return []


def _last_call(chunks: list[rt.StreamChunk]) -> rt.ToolCall | None:
    calls = [c.tool_call for c in chunks if c.HasField("tool_call")]
    return calls[-1] if calls else None


async def converse(
    servers: Servers, record: Record, session_id: str, kills_over: asyncio.Event
) -> None:
    """Cycle through a plain question, one that makes the model read a file and one that
    makes it write one; approve every write, answer every call with a tool result. Each
    input has its own client_message_id and carries it in its text, so a duplicate in the
    history is easy to spot. Goes on until the kills are over and enough turns completed."""
    asks = ["just say something", f"{READ_WORD} a file", f"{WRITE_WORD} a file"]
    for step in itertools.count(1):
        if kills_over.is_set() and record.completed >= MIN_COMPLETED_TURNS:
            return
        cmid = f"{session_id}-u{step}"
        text = f"[{cmid}] {asks[step % len(asks)]}"
        call = _last_call(
            await send(servers, record, user_message(session_id, text, client_message_id=cmid))
        )
        if call is not None and call.requires_approval:
            record.awaiting_approval.add((session_id, call.call_id))
            approve = decision(session_id, call.call_id, rt.DECISION_APPROVE)
            approve.client_message_id = f"{cmid}-a"
            record.awaiting_approval.discard((session_id, call.call_id))  # decided from now on
            call = _last_call(await send(servers, record, approve))
            record.approvals += 1
        if call is not None and not call.requires_approval:
            result = tool_result(session_id, call.call_id, f"[{cmid}-r] done")
            result.client_message_id = f"{cmid}-r"
            await send(servers, record, result)


# -- the checks ---------------------------------------------------------------------------------


async def crash_damage(servers: Servers, record: Record) -> list[str]:
    """Everything a crash may have broken, read through the API and the database."""
    problems: list[str] = []
    stuck = [row for row in turn_statuses(servers.db_path) if row[2] == "running"]
    if stuck:
        problems.append(f"turns still RUNNING: {stuck}")
    async with grpc.aio.insecure_channel(servers.current.address) as channel:
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        listed = await sessions.ListSessions(ses.ListSessionsRequest(page_size=100), timeout=10)
        stored_sessions = {s.session_id for s in listed.sessions}
        for session_id, _, _ in record.started:
            if session_id not in stored_sessions:
                problems.append(f"session {session_id} lost")
        for session_id in sorted(stored_sessions):
            reply = await sessions.GetSession(
                ses.GetSessionRequest(session_id=session_id), timeout=10
            )
            if reply.session.running_turn_id:
                problems.append(f"{session_id} busy with {reply.session.running_turn_id}")
            messages = await all_messages(sessions, session_id)
            problems += [f"{session_id}: {p}" for p in message_problems(messages)]
            stored = {m.message_id for m in messages}
            for sid, turn_id, input_id in record.started:
                # An approval is not a message: its TurnStarted names no input message.
                if sid == session_id and input_id and input_id not in stored:
                    problems.append(f"{session_id}: input {input_id} of {turn_id} lost")
            for message_id, sid in record.answers.items():
                if sid == session_id and message_id not in stored:
                    problems.append(f"{session_id}: answer {message_id} lost")
            pending = await sessions.ListPendingApprovals(
                ses.ListPendingApprovalsRequest(session_id=session_id, page_size=100), timeout=10
            )
            open_calls = {a.call_id for a in pending.approvals}
            for sid, call_id in record.awaiting_approval:
                if sid == session_id and call_id not in open_calls:
                    problems.append(f"{session_id}: approval of {call_id} lost")
            tags = Counter(m.content.split("]")[0] + "]" for m in messages if m.content[:1] == "[")
            problems += [
                f"{session_id}: {tag} stored {n} times" for tag, n in tags.items() if n > 1
            ]
    return problems


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        server.default_response = slow_model()
        yield server


# Kills and restarts the server again and again (about 13 s on a 2-core machine).
@pytest.mark.timeout(150)
async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, model: FakeModelServer
) -> None:
    rng = random.Random(SEED)
    servers = Servers(tmp_path / "runtime.db", model.base_url)
    record = Record()
    kills_over = asyncio.Event()
    began = time.monotonic()
    await servers.start()
    servers.ready.set()
    clients = [
        asyncio.create_task(converse(servers, record, session_id, kills_over))
        for session_id in SESSIONS
    ]
    after_restart: list[list[str]] = []
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(*KILL_AFTER))  # the fault's timing, drawn
            await servers.kill()
            await servers.start()
            # Checked before any client is let in: the start-up sweep alone must have
            # freed the sessions and ended the turns the dead process left running.
            after_restart.append(await crash_damage(servers, record))
            servers.ready.set()
        kills_over.set()
        await asyncio.wait_for(asyncio.gather(*clients), RPC_TIMEOUT * 2)
        at_end = await crash_damage(servers, record)
    finally:
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await servers.current.kill_hard()

    summary = (
        f"{record.completed} turns completed, {len(record.started)} TurnStarted received, "
        f"{record.cut} requests cut by {KILLS} kills, {record.replayed_interrupted} retries "
        f"replayed an interrupted turn, {record.approvals} approvals, "
        f"{time.monotonic() - began:.1f}s"
    )
    print(summary)
    assert servers.exit_codes == [-9] * KILLS
    assert model.errors == [], model.errors  # the scripted model itself worked
    assert record.problems == [], f"{summary}: {record.problems}"
    for kill, problems in enumerate(after_restart, 1):
        assert problems == [], f"after kill #{kill}: {problems}"
    assert at_end == [], at_end
    assert record.completed >= MIN_COMPLETED_TURNS, summary
    assert record.cut >= 1, f"no kill landed on a request: {summary}"
    assert turn_statuses(servers.db_path), "no turn was stored at all"
    assert not [row for row in turn_statuses(servers.db_path) if row[2] == "running"]
