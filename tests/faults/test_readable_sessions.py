"""No client input makes a session unreadable: what a client can put in one session, and every
page of every list, fits in one gRPC message, on SQLite and PostgreSQL.

Each test makes, through the public API of a real server, the most a client may make: agent
switches without end, sessions whose instructions are as long as allowed, turns whose model
names are, APPROVE_ALWAYS grants as large as allowed. Then every read answers (read_back.py
reads the session through every read RPC). Where the default 4 MiB message would take
thousands of requests to fill, the server's send limit is scaled down (SMALL), as the
hostile-model suite does: the same bounds hold, in fewer requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from agent_runtime.bootstrap import RunningRuntime
from agent_runtime.client import AgentRuntimeClient, BlockingAgentRuntimeClient
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import model_controls_pb2 as mc
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us
from tests.faults.read_back import RECENT_SWITCHES, read_back
from tests.support.fake_model_server import (
    DONE_FRAME,
    FakeModelServer,
    raw_sse,
    sse_frame,
    text_answer,
    tool_call_frame,
)
from tests.support.grpc_helpers import (
    decision,
    kinds,
    only,
    rich_error,
    switch_agent,
    tool_result,
    user_message,
)
from tests.support.runtime_fixtures import Client

KIB = 1024
MIB = 1024 * KIB
EMOJI = "\U0001f600"  # 4 bytes in UTF-8: the most a character of text takes
# The server sends at most this much in one message: a page holds 3/4 of it (72 KiB).
SMALL = {"transport": {"max_send_message_bytes": 96 * KIB}}
# What a session may hold of what clients set (application/session_bound.py).
MAX_SESSION_BYTES = 2 * MIB


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """The runtime's settings: the defaults, unless a test asks for others (indirect)."""
    return getattr(request, "param", {})


async def _every_page(call: Any, request: Any, items: str) -> list[list[Any]]:
    """The items of each page of a list, from the first page to the last."""
    pages = []
    while True:
        page = await call(request, timeout=30)
        pages.append(list(getattr(page, items)))
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


# -- agent switches without end ------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [SMALL], indirect=True)
async def test_a_session_switching_agents_without_end_shows_its_latest_switches(
    client: Client, runtime: RunningRuntime
) -> None:
    """40 switches of reasons as long as allowed, in characters of 4 bytes (168 KiB together,
    more than the server sends in one message): GetSession shows the last 16 and how many
    there were, ListAgentSwitches pages through them all."""
    reasons = [f"{n:02}" + EMOJI * 1022 for n in range(40)]
    for n, reason in enumerate(reasons):
        chunks = await client.turn(switch_agent("s1", ("architect", "coder")[n % 2], reason))
        assert kinds(chunks)[-1] == "turn_completed", chunks

    read = await read_back(client, f"127.0.0.1:{runtime.port}", "s1", chunks)

    assert [s.reason for s in read.switches] == reasons
    assert [s.to_agent for s in read.switches][:3] == ["architect", "coder", "architect"]
    assert read.session.agent_switch_count == 40
    assert [s.reason for s in read.session.agent_history] == reasons[-RECENT_SWITCHES:]
    pages = await _every_page(
        client.sessions.ListAgentSwitches,
        ses.ListAgentSwitchesRequest(session_id="s1", page_size=1000),
        "agent_switches",
    )
    assert len(pages) > 1, "40 switches of 4 KiB fit in one page of 72 KiB"
    assert [s for page in pages for s in page] == read.switches


# -- turns and usage groups: one per model name a client chose -----------------------------------


@pytest.mark.parametrize("settings_overrides", [SMALL], indirect=True)
async def test_turns_and_usage_groups_of_long_model_names_are_paged_in_bytes(
    client: Client, runtime: RunningRuntime, model_server: FakeModelServer
) -> None:
    """100 turns, each naming a model of 256 characters of 4 bytes (a client's choice, each
    a usage group of its own): more than one message, as a page of turns and as groups."""
    model_server.default_response = text_answer("ok")
    models = [f"{n:03}" + EMOJI * 253 for n in range(100)]
    for model in models:
        chunks = await client.turn(user_message("s1", "hi", model=model))
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN, chunks

    turn_pages = await _every_page(
        client.sessions.ListTurns, ses.ListTurnsRequest(session_id="s1", page_size=1000), "turns"
    )
    assert len(turn_pages) > 1
    assert [t.model for page in turn_pages for t in page] == models

    request = us.GetUsageRequest(group_by=us.USAGE_GROUP_BY_MODEL)
    group_pages = await _every_page(client.usage.GetUsage, request, "groups")
    assert len(group_pages) > 1
    assert [g.key for page in group_pages for g in page] == sorted(models)
    assert all(g.usage.turns == 1 for page in group_pages for g in page)
    async with AgentRuntimeClient(f"127.0.0.1:{runtime.port}") as api:
        report = await api.get_usage(group_by=us.USAGE_GROUP_BY_MODEL, timeout=30)
    assert [g.key for g in report.groups] == sorted(models)
    assert report.total.turns == 100 and report.next_page_token == ""

    def blocking_report() -> us.GetUsageResponse:
        with BlockingAgentRuntimeClient(f"127.0.0.1:{runtime.port}") as api:
            switches = list(api.list_agent_switches("s1", page_size=1))
            assert switches == []
            return api.get_usage(group_by=us.USAGE_GROUP_BY_MODEL, timeout=30)

    assert await asyncio.to_thread(blocking_report) == report

    read = await read_back(client, f"127.0.0.1:{runtime.port}", "s1", chunks)
    assert len(read.turns) == 100


# -- sessions with the longest instructions ------------------------------------------------------


async def test_a_page_of_sessions_with_the_longest_instructions_fits_in_a_message(
    client: Client, runtime: RunningRuntime
) -> None:
    """17 sessions of 256 KiB instructions each (the default limit): more than the 4 MiB a
    gRPC message holds by default, in one page of 50."""
    ids = [f"s{n:02}" for n in range(17)]
    for session_id in ids:
        await client.sessions.CreateSession(
            ses.CreateSessionRequest(session_id=session_id, instructions="i" * 256 * KIB)
        )

    pages = await _every_page(
        client.sessions.ListSessions, ses.ListSessionsRequest(page_size=50), "sessions"
    )

    assert len(pages) > 1
    assert sorted(s.session_id for page in pages for s in page) == ids
    assert all(len(s.instructions) == 256 * KIB for page in pages for s in page)
    async with AgentRuntimeClient(f"127.0.0.1:{runtime.port}") as api:
        listed = [s.session_id async for s in api.list_sessions(page_size=50)]
    assert sorted(listed) == ids


# -- a session as large as a client can make it --------------------------------------------------

# A tool the model calls and a human approves always: each grant's argument globs take what
# an APPROVE_ALWAYS may hold (16 of 128-character names and 1024-character globs, about
# 74 KiB in characters of 4 bytes).
APPROVED = "run"
GLOBS = 16


def _large_tools() -> list[mc.ToolDefinition]:
    """Declared tools of the most a session may declare (256 KiB in characters), in
    characters of 4 bytes: about 1 MiB as GetSession sends them."""
    tools = [mc.ToolDefinition(name=f"t{n:02}", description=EMOJI * 4096) for n in range(61)]
    approved = mc.ToolDefinition(name=APPROVED, description="runs", requires_approval=True)
    approved.parameters.update({"type": "object", "properties": {}})
    return [*tools, approved]


def _always_when(grant: int) -> dict[str, str]:
    """Arguments of call `grant`, matched by the globs of its own grant only."""
    return {f"{k:02}" + EMOJI * 126: f"{grant:03}" + EMOJI * 1021 for k in range(GLOBS)}


def _approved_call(grant: int) -> Any:
    arguments = json.dumps(_always_when(grant), ensure_ascii=False)
    return raw_sse(
        [
            tool_call_frame(0, f"call_{grant}", APPROVED, arguments),
            sse_frame({}, "tool_calls"),
            DONE_FRAME,
        ]
    )


async def _approve_always(client: Client, model: FakeModelServer, grant: int) -> Any:
    """A turn whose call to APPROVED awaits approval, then APPROVE_ALWAYS of it: the
    decision's chunks, or the error that refused it."""
    model.enqueue(_approved_call(grant))
    asked = await client.turn(user_message("big", f"run {grant}"))
    assert asked[-1].turn_completed.stop_reason == rt.STOP_REASON_AWAITING_APPROVAL, asked
    request = decision("big", f"call_{grant}", rt.DECISION_APPROVE_ALWAYS)
    request.approval_decision.always_when.update(_always_when(grant))
    try:
        return await client.turn(request)
    except grpc.aio.AioRpcError as refused:
        return refused


async def test_no_client_input_makes_a_session_larger_than_it_may_be(
    client: Client, runtime: RunningRuntime, model_server: FakeModelServer
) -> None:
    """The largest declared tools, then APPROVE_ALWAYS grants as large as allowed until the
    session is full: the grant that would pass 2 MiB is refused (FAILED_PRECONDITION), as is
    an UpdateSession that would (INVALID_ARGUMENT, its field named); the session stays
    readable everywhere, and the call refused a grant can still be approved once."""
    created = await client.sessions.CreateSession(
        ses.CreateSessionRequest(session_id="big", tools=_large_tools())
    )
    assert created.session.ByteSize() > 900 * KIB  # of 256 KiB declared
    refused = None
    for grant in range(30):  # 1 MiB of tools and 30 grants of 74 KiB: past 3 MiB
        outcome = await _approve_always(client, model_server, grant)
        if isinstance(outcome, grpc.aio.AioRpcError):
            refused = outcome
            break
        call = only(outcome, "tool_call").tool_call
        model_server.enqueue(text_answer("done"))
        await client.turn(tool_result("big", call.call_id, "ran"))
    assert refused is not None, "30 grants of 74 KiB were granted: the session is over 3 MiB"
    error = rich_error(refused)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION, error
    assert error.error_info is not None and error.error_info.reason == "SESSION_TOO_LARGE"
    assert int(error.error_info.metadata["max_session_bytes"]) == MAX_SESSION_BYTES
    assert int(error.error_info.metadata["session_bytes"]) > MAX_SESSION_BYTES

    got = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="big"))).session
    assert len(got.approval_grants) == grant  # the refused one was not made
    without_history = ses.Session()
    without_history.CopyFrom(got)
    del without_history.agent_history[:]
    assert without_history.ByteSize() <= MAX_SESSION_BYTES
    pending = await client.sessions.ListPendingApprovals(
        ses.ListPendingApprovalsRequest(session_id="big")
    )
    assert [a.call_id for a in pending.approvals] == [f"call_{grant}"]

    longer = ses.Session(session_id="big", instructions="i" * 256 * KIB)
    update = ses.UpdateSessionRequest(session=longer)
    update.update_mask.paths.append("instructions")
    with pytest.raises(grpc.aio.AioRpcError) as too_large:
        await client.sessions.UpdateSession(update)
    error = rich_error(too_large.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.error_info is not None and error.error_info.reason == "SESSION_TOO_LARGE"
    assert [name for name, _ in error.field_violations] == ["session.instructions"]
    after = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="big"))).session
    assert after == got  # nothing changed

    approved = await client.turn(decision("big", f"call_{grant}", rt.DECISION_APPROVE))
    call = only(approved, "tool_call").tool_call
    model_server.enqueue(text_answer("done"))
    last = await client.turn(tool_result("big", call.call_id, "ran"))
    read = await read_back(client, f"127.0.0.1:{runtime.port}", "big", last)
    assert len(read.session.approval_grants) == grant
    assert len(read.session.tools) == len(_large_tools())


@pytest.mark.parametrize(
    "settings_overrides", [{"turns": {"max_message_bytes": 3 * MIB}}], indirect=True
)
async def test_instructions_an_operator_allows_still_make_no_session_past_the_bound(
    client: Client,
) -> None:
    """Instructions may be as long as AGENT_RUNTIME_MAX_MESSAGE_BYTES; a session is still
    at most 2 MiB: CreateSession is refused (INVALID_ARGUMENT, the field named), and stores
    nothing."""
    request = ses.CreateSessionRequest(
        session_id="s1", title="t", instructions="i" * (5 * MIB // 2)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.sessions.CreateSession(request)
    error = rich_error(refused.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.error_info is not None and error.error_info.reason == "SESSION_TOO_LARGE"
    assert [name for name, _ in error.field_violations] == ["title", "instructions"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    request.instructions = "i" * (3 * MIB // 2)
    created = await client.sessions.CreateSession(request)
    assert len(created.session.instructions) == 3 * MIB // 2
