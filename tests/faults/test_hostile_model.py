"""A hostile model endpoint, end to end (issue 18): every misbehaviour of an OpenAI-compatible
server we know of, each a real HTTP response of the fake model server, against a real runtime
on SQLite and on PostgreSQL.

Whatever the model sends, for every mode afterwards:
- the client saw how the turn ended: an Error chunk then TurnCompleted(ERROR) for an answer
  the runtime refuses, or TurnCompleted with its stop reason for one it repairs (a lone
  surrogate becomes U+FFFD) or turns into a tool error the model reads and answers (a call
  it may not make); each mode says which, and why;
- what is stored is what can be read back: every read RPC, every page, answers and decodes,
  raw and through the Python client (read_back.py); per mode, what was repaired is checked;
- the session is free, and a next turn on it works (and the history it sends the model is
  one a provider accepts).

The modes, their expected outcomes and their own checks are in hostile_modes.py. One runtime
per store serves every mode, each in a session of its own: a fault that leaves anything
behind in the process (a stuck session, a connection, a task) shows in the modes after it,
and the suite stays fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.hostile_modes import LIMITS, MODES, Mode, Seen
from tests.faults.read_back import read_back
from tests.support.databases import BACKENDS
from tests.support.fake_model_server import FakeModelServer, ScriptedResponse, text_answer
from tests.support.grpc_helpers import decision, kinds, only, tool_result, user_message
from tests.support.history import history_problems
from tests.support.migrated_databases import migrated_database_for
from tests.support.runtime_fixtures import Client, connect, running_runtime

pytestmark = pytest.mark.asyncio(loop_scope="module")

TURN_DEADLINE = 30.0  # seconds: no mode's turn comes near it, however the model misbehaves


# -- the runtime (one per store, shared by the modes) --------------------------------------------


@dataclass
class Runtime:
    client: Client
    target: str
    model: FakeModelServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile_model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def shared_runtime(
    request: pytest.FixtureRequest,
    hostile_model: FakeModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Runtime]:
    db_file = Path(tmp_path_factory.mktemp("hostile")) / "runtime.db"
    async with (
        migrated_database_for(request.param, str(db_file)) as database_url,
        running_runtime(hostile_model, database_url, LIMITS) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Runtime(connect(channel), f"127.0.0.1:{running.port}", hostile_model)


@pytest_asyncio.fixture(loop_scope="module")
async def hostile(shared_runtime: Runtime) -> AsyncIterator[Runtime]:
    """The shared runtime, its model server's script left empty for the next mode."""
    model = shared_runtime.model
    model.clear_queue()
    errors_before = len(model.errors)
    yield shared_runtime
    model.clear_queue()
    assert model.errors[errors_before:] == []


# -- the test ------------------------------------------------------------------------------------


def next_input(session_id: str, chunks: list[rt.StreamChunk]) -> rt.StreamMessageRequest:
    """What a client sends after the turn `chunks`: the result of the tool it was asked to
    run, the human's verdict on a call awaiting approval, a regenerate after a failure (what
    was kept of it is superseded), or its next message (what was stored goes to the model)."""
    stop = chunks[-1].turn_completed.stop_reason
    if stop == rt.STOP_REASON_TOOL_CALL:
        return tool_result(session_id, only(chunks, "tool_call").tool_call.call_id, "ran it")
    if stop == rt.STOP_REASON_AWAITING_APPROVAL:
        call_id = only(chunks, "tool_call").tool_call.call_id
        return decision(session_id, call_id, rt.DECISION_REJECT, feedback="not now")
    if stop == rt.STOP_REASON_ERROR:
        return rt.StreamMessageRequest(session_id=session_id, regenerate=rt.Regenerate())
    return user_message(session_id, "and now?")


async def run_turn(
    runtime: Runtime,
    request: rt.StreamMessageRequest,
    *answers: ScriptedResponse,
    streamed: asyncio.Event | None = None,
) -> tuple[list[rt.StreamChunk], list[dict[str, Any]]]:
    """One turn, the model answering `answers` in order: its chunks, and the requests the
    model endpoint received for it (as many as there were answers: each was taken).
    `streamed` is set when the first AssistantDelta arrives."""
    model = runtime.model
    first_request = len(model.requests)
    model.enqueue(*answers)
    chunks: list[rt.StreamChunk] = []
    async with asyncio.timeout(TURN_DEADLINE):
        async for chunk in runtime.client.runtime.StreamMessage(request):
            chunks.append(chunk)
            if streamed is not None and chunk.HasField("assistant_delta"):
                streamed.set()
    assert model.queued == [], "the turn did not take every scripted answer"
    requests = model.requests[first_request:]
    assert len(requests) == len(answers), [r.get("messages", [])[-1:] for r in requests]
    for body in requests:
        assert history_problems(wire_history(body)) == [], body["messages"]
    return chunks, requests


def wire_history(body: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """(role, the call it requests, the call it answers) of each message the model was sent."""
    return [
        (
            message["role"],
            message["tool_calls"][0]["id"] if message.get("tool_calls") else None,
            message.get("tool_call_id"),
        )
        for message in body["messages"]
        if message["role"] != "system"
    ]


def assert_the_client_saw_the_end(mode: Mode, chunks: list[rt.StreamChunk]) -> None:
    seen = kinds(chunks)
    assert seen[0] == "turn_started" and seen.count("turn_started") == 1, seen
    assert seen[-1] == "turn_completed" and seen.count("turn_completed") == 1, seen
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[-1].turn_completed.stop_reason == mode.stop, (mode.why, chunks[-2:])
    if mode.fails_with:
        assert seen[-2] == "error", seen
        error = chunks[-2].error
        assert error.reason == mode.fails_with, (mode.why, error)
        assert error.code not in ("INTERNAL", ""), error
    else:
        assert "error" not in seen, (mode.why, chunks)


@pytest.mark.parametrize("name", list(MODES))
async def test_a_hostile_model_never_poisons_the_session(hostile: Runtime, name: str) -> None:
    mode = MODES[name]
    session_id = f"hostile-{list(MODES).index(name)}"
    request = user_message(session_id, "do something", agent=mode.agent)
    if mode.before:
        earlier, _ = await run_turn(hostile, request, *mode.before)
        request = next_input(session_id, earlier)

    if mode.streamed is not None:
        mode.streamed.clear()
    chunks, requests = await run_turn(hostile, request, *mode.answers, streamed=mode.streamed)

    assert_the_client_saw_the_end(mode, chunks)
    read = await read_back(hostile.client, hostile.target, session_id, chunks)
    assert read.session.running_turn_id == ""
    expected_state = ses.TURN_STATE_FAILED if mode.fails_with else ses.TURN_STATE_COMPLETED
    assert (read.turn.state, read.turn.error_reason) == (expected_state, mode.fails_with)
    for check in mode.checks:
        check(Seen(chunks, read, requests))

    after, _ = await run_turn(hostile, next_input(session_id, chunks), text_answer("recovered"))
    assert kinds(after)[-2:] == ["assistant_message", "turn_completed"], after
    assert after[-2].assistant_message.content == "recovered"
    if mode.fails_with:  # regenerated: the failed turn's messages are superseded, and readable
        again = await read_back(hostile.client, hostile.target, session_id, after)
        assert again.session.running_turn_id == ""
        assert [m.content for m in again.messages][-2:] == ["do something", "recovered"]
        superseded = [m for m in again.with_superseded if m.superseded_by_turn_id]
        assert [m.message_id for m in superseded] == [m.message_id for m in read.messages[1:]]
    else:
        got = await hostile.client.sessions.GetSession(ses.GetSessionRequest(session_id=session_id))
        assert got.session.running_turn_id == ""
