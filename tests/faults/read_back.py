"""A session read back through every read RPC after a turn, raw and through the Python client.

A turn that stored something no reader can decode (a lone surrogate, a Struct nested past
protobuf's limit...) poisons its session: every later read fails. read_back() makes each
read the API offers, all pages of each, and fails on the first that does not answer, or that
disagrees with another read of the same thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from agent_runtime.client import AgentRuntimeClient
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import event_pb2 as ev
from agent_runtime.v1 import session_pb2 as ses
from tests.faults.checks import message_problems
from tests.support.runtime_fixtures import Client

# Small pages, so that every read is seen across several of them (sessions: read up to the
# page that has the session, the first when it was the last active).
PAGE = 2
SESSIONS_PAGE = 16
MAX_PAGE = 1000  # the largest a client may ask for
RECENT_SWITCHES = 16  # the agent switches a session shows (ListAgentSwitches has them all)
_DEADLINE = 10.0
_DELTAS = ("assistant_delta", "tool_call_delta", "reasoning_delta")
_TURN_ENDINGS = (
    ev.EVENT_TYPE_TURN_COMPLETED,
    ev.EVENT_TYPE_TURN_FAILED,
    ev.EVENT_TYPE_TURN_CANCELLED,
)


@dataclass(frozen=True)
class ReadBack:
    session: ses.Session
    messages: list[ses.Message]
    with_superseded: list[ses.Message]
    turns: list[ses.Turn]
    turn: ses.Turn  # the turn read back, by GetTurn
    approvals: list[ses.PendingApproval]
    # The session's events from the first up to the ending of the turn.
    events: list[ev.Event]
    switches: list[ses.AgentSwitch]  # every one, by ListAgentSwitches


def replayed(chunks: Sequence[rt.StreamChunk]) -> list[rt.StreamChunk]:
    """What a replay of a finished turn holds: every chunk but the deltas."""
    return [c for c in chunks if c.WhichOneof("chunk") not in _DELTAS]


async def read_back(
    client: Client, target: str, session_id: str, streamed: Sequence[rt.StreamChunk]
) -> ReadBack:
    """Every read of the session after its turn `streamed` (as the client received it) ended;
    each read with the raw stubs, then again with AgentRuntimeClient on `target`."""
    turn_id = streamed[0].turn_id
    last_seq = streamed[-1].seq
    sessions = client.sessions

    got = await sessions.GetSession(ses.GetSessionRequest(session_id=session_id), timeout=10)
    assert await _session_listed(client, session_id) == as_listed(got.session)
    messages = await _every_message(client, session_id, include_superseded=False)
    with_superseded = await _every_message(client, session_id, include_superseded=True)
    largest_pages = await _every_message(client, session_id, page_size=MAX_PAGE)
    assert largest_pages == messages, "ListMessages pages of different sizes disagree"
    assert message_problems(with_superseded) == []
    approvals = await _every_approval(client, session_id)
    switches = await _every_switch(client, session_id)
    assert got.session.agent_switch_count == len(switches)
    recent = switches[len(switches) - len(got.session.agent_history) :]
    assert list(got.session.agent_history) == recent, "agent_history: not the latest switches"
    assert len(recent) == min(len(switches), RECENT_SWITCHES)
    turns = await _every_turn(client, session_id)
    turn = (await sessions.GetTurn(ses.GetTurnRequest(session_id=session_id, turn_id=turn_id))).turn
    assert [t for t in turns if t.turn_id == turn_id] == [turn]
    assert turn.state != ses.TURN_STATE_RUNNING, turn

    replay = await _resumed(client, session_id, turn_id, 0)
    assert replay == replayed(streamed), "ResumeStream from 0 differs from what was streamed"
    assert await _resumed(client, session_id, turn_id, last_seq) == []
    events = await asyncio.wait_for(_events(client, session_id, turn_id), _DEADLINE)
    assert {e.session_id for e in events} == {session_id}
    assert [e.event_id for e in events] == sorted({e.event_id for e in events})

    async with AgentRuntimeClient(target) as api:
        assert await api.get_session(session_id, timeout=10) == got.session
        async with aclosing(api.list_sessions(page_size=SESSIONS_PAGE)) as sessions_listed:
            async for listed in sessions_listed:
                if listed.session_id == session_id:
                    assert listed == as_listed(got.session)
                    break
            else:
                raise AssertionError(f"list_sessions does not list {session_id}")
        assert await _all(api.list_messages(session_id, page_size=PAGE)) == messages
        assert (
            await _all(api.list_messages(session_id, page_size=PAGE, include_superseded=True))
            == with_superseded
        )
        assert await _all(api.list_pending_approvals(session_id, page_size=PAGE)) == approvals
        assert await _all(api.list_agent_switches(session_id, page_size=PAGE)) == switches
        assert await _all(api.list_turns(session_id, page_size=PAGE)) == turns
        assert await api.get_turn(session_id, turn_id, timeout=10) == turn
        assert await _all(api.resume_stream(session_id, turn_id, timeout=10)) == replay
        assert await _all(api.resume_stream(session_id, turn_id, last_seq, timeout=10)) == []
        watched = api.watch_events(session_id=session_id, after_event_id=0)
        assert await asyncio.wait_for(_until_ending(watched, turn_id), _DEADLINE) == events

    return ReadBack(
        got.session, messages, with_superseded, turns, turn, approvals, events, switches
    )


def as_listed(session: ses.Session) -> ses.Session:
    """The session as ListSessions lists it: without its declared tools."""
    listed = ses.Session()
    listed.CopyFrom(session)
    del listed.tools[:]
    return listed


async def _all(items: AsyncIterator[object]) -> list[object]:
    return [item async for item in items]


async def _session_listed(client: Client, session_id: str) -> ses.Session:
    """The session as ListSessions lists it, from its pages up to the one that has it (the
    most recently active come first)."""
    token = ""
    while True:
        page: ses.ListSessionsResponse = await client.sessions.ListSessions(
            ses.ListSessionsRequest(page_size=SESSIONS_PAGE, page_token=token), timeout=10
        )
        listed = [s for s in page.sessions if s.session_id == session_id]
        if listed:
            return listed[0]
        if not (token := page.next_page_token):
            raise AssertionError(f"ListSessions does not list {session_id}")


async def _every_message(
    client: Client, session_id: str, *, include_superseded: bool = False, page_size: int = PAGE
) -> list[ses.Message]:
    found: list[ses.Message] = []
    token = ""
    while True:
        request = ses.ListMessagesRequest(
            session_id=session_id,
            page_size=page_size,
            page_token=token,
            include_superseded=include_superseded,
        )
        page = await client.sessions.ListMessages(request, timeout=10)
        found += page.messages
        if not (token := page.next_page_token):
            return found


async def _every_approval(client: Client, session_id: str) -> list[ses.PendingApproval]:
    found: list[ses.PendingApproval] = []
    token = ""
    while True:
        request = ses.ListPendingApprovalsRequest(
            session_id=session_id, page_size=PAGE, page_token=token
        )
        page = await client.sessions.ListPendingApprovals(request, timeout=10)
        found += page.approvals
        if not (token := page.next_page_token):
            return found


async def _every_switch(client: Client, session_id: str) -> list[ses.AgentSwitch]:
    found: list[ses.AgentSwitch] = []
    token = ""
    while True:
        request = ses.ListAgentSwitchesRequest(
            session_id=session_id, page_size=PAGE, page_token=token
        )
        page = await client.sessions.ListAgentSwitches(request, timeout=10)
        found += page.agent_switches
        if not (token := page.next_page_token):
            return found


async def _every_turn(client: Client, session_id: str) -> list[ses.Turn]:
    found: list[ses.Turn] = []
    token = ""
    while True:
        request = ses.ListTurnsRequest(session_id=session_id, page_size=PAGE, page_token=token)
        page = await client.sessions.ListTurns(request, timeout=10)
        found += page.turns
        if not (token := page.next_page_token):
            return found


async def _resumed(
    client: Client, session_id: str, turn_id: str, after_seq: int
) -> list[rt.StreamChunk]:
    request = rt.ResumeStreamRequest(session_id=session_id, turn_id=turn_id, after_seq=after_seq)
    return [chunk async for chunk in client.runtime.ResumeStream(request, timeout=10)]


async def _events(client: Client, session_id: str, turn_id: str) -> list[ev.Event]:
    request = ev.WatchEventsRequest(session_id=session_id, after_event_id=0)
    call = client.events.WatchEvents(request, timeout=_DEADLINE)
    try:
        return await _until_ending((response.event async for response in call), turn_id)
    finally:
        call.cancel()


async def _until_ending(events: AsyncGenerator[ev.Event, None], turn_id: str) -> list[ev.Event]:
    """The events up to the one that ends turn `turn_id` (WatchEvents goes on live after)."""
    seen: list[ev.Event] = []
    async with aclosing(events):
        async for event in events:
            seen.append(event)
            if event.turn_id == turn_id and event.type in _TURN_ENDINGS:
                return seen
    raise AssertionError(f"WatchEvents ended before the end of turn {turn_id}: {seen}")
