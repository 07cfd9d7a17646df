"""Turns as resources (GetTurn, ListTurns) and usage (GetSession, UsageService, Prometheus),
end to end on each backend: usage is counted once per turn, whatever is retried or resumed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from agent_runtime.v1 import usage_pb2 as us
from tests.e2e.test_metrics import Scraper, metrics
from tests.support.fake_model_server import (
    FakeModelServer,
    http_error,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import rich_error, tool_result, user_message
from tests.support.runtime_fixtures import Client

__all__ = ["metrics"]  # the Prometheus scraper fixture


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"observability": {"metrics_listen": "127.0.0.1:0"}, "model": {"max_attempts": 1}}


def stamp(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


async def test_a_turn_reads_back_with_its_outcome_usage_counts_and_timings(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "a.py"}, usage=(10, 2)),
        text_answer("it says hello", usage=(20, 3)),
    )
    first = await client.turn(user_message("s1", "what is in a.py?", client_message_id="k1"))
    call = first[-2].tool_call
    second = await client.turn(tool_result("s1", call.call_id, "print('hello')"))

    got = (
        await client.sessions.GetTurn(ses.GetTurnRequest(session_id="s1", turn_id=first[0].turn_id))
    ).turn
    assert (got.turn_id, got.session_id, got.agent, got.client_message_id) == (
        first[0].turn_id,
        "s1",
        "coder",
        "k1",
    )
    assert got.input_message_id == first[0].turn_started.input_message_id
    assert (got.state, got.stop_reason) == (ses.TURN_STATE_COMPLETED, rt.STOP_REASON_TOOL_CALL)
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (
        10,
        2,
        12,
    )
    assert (got.model_calls, got.tool_calls) == (1, 1)
    assert got.HasField("time_to_first_token") and got.HasField("ended_at")
    assert got.started_at.ToDatetime() <= got.ended_at.ToDatetime()
    assert got.time_to_first_token.ToTimedelta() <= (
        got.ended_at.ToDatetime() - got.started_at.ToDatetime()
    )
    assert got.usage == first[-1].turn_completed.usage  # what TurnCompleted said

    listed = await client.sessions.ListTurns(ses.ListTurnsRequest(session_id="s1", page_size=1))
    assert [t.turn_id for t in listed.turns] == [first[0].turn_id] and listed.next_page_token
    rest = await client.sessions.ListTurns(
        ses.ListTurnsRequest(session_id="s1", page_token=listed.next_page_token)
    )
    assert [t.turn_id for t in rest.turns] == [second[0].turn_id] and not rest.next_page_token
    assert rest.turns[0].stop_reason == rt.STOP_REASON_END_TURN
    assert (rest.turns[0].model_calls, rest.turns[0].tool_calls) == (1, 0)
    assert listed.turns[0] == got


async def test_a_failed_turn_says_why_and_an_unknown_turn_is_not_found(
    client: Client, model_server: FakeModelServer
) -> None:
    model_server.enqueue(http_error(400, "no such model"))
    failed = await client.turn(user_message("s1", "hello"))
    got = (
        await client.sessions.GetTurn(
            ses.GetTurnRequest(session_id="s1", turn_id=failed[0].turn_id)
        )
    ).turn
    assert (got.state, got.stop_reason) == (ses.TURN_STATE_FAILED, rt.STOP_REASON_ERROR)
    assert got.error_reason == failed[-2].error.reason == "MODEL_HTTP_400"
    assert got.error_message

    await client.sessions.CreateSession(ses.CreateSessionRequest(session_id="s2"))
    for session_id, turn_id, reason in (
        ("s1", "trn_nope", "TURN_NOT_FOUND"),
        ("s2", failed[0].turn_id, "TURN_NOT_FOUND"),  # a turn of another session
        ("nope", failed[0].turn_id, "SESSION_NOT_FOUND"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.sessions.GetTurn(
                ses.GetTurnRequest(session_id=session_id, turn_id=turn_id)
            )
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.error_info is not None and error.error_info.reason == reason
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.ListTurns(ses.ListTurnsRequest(session_id="s1", page_token="x"))
    assert rich_error(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_usage_is_totalled_per_session_and_tenant_once_per_turn(
    client: Client, model_server: FakeModelServer, metrics: Scraper
) -> None:
    model_server.enqueue(
        text_answer("one", usage=(100, 10)),
        text_answer("two", usage=(200, 20)),
        text_answer("three", usage=(300, 30)),
    )
    before = datetime.now(UTC) - timedelta(seconds=1)
    retried = user_message("s1", "first", client_message_id="key-1")
    first = await client.turn(retried)
    await client.turn(user_message("s1", "second", model="model-b"))
    await client.turn(user_message("s2", "elsewhere"))

    # Neither a retry (it replays the turn) nor a resume counts anything again.
    assert await client.turn(retried) == [c for c in first if not c.HasField("assistant_delta")]
    resumed = client.runtime.ResumeStream(
        rt.ResumeStreamRequest(session_id="s1", turn_id=first[0].turn_id)
    )
    assert [c async for c in resumed][-1].HasField("turn_completed")
    assert len(model_server.requests) == 3

    s1 = (await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))).session
    assert (s1.usage.prompt_tokens, s1.usage.completion_tokens, s1.usage.total_tokens) == (
        300,
        30,
        330,
    )
    assert s1.usage.turns == 2
    listed = await client.sessions.ListSessions(ses.ListSessionsRequest())
    assert {s.session_id: s.usage.total_tokens for s in listed.sessions} == {"s1": 330, "s2": 330}

    everything = await client.usage.GetUsage(us.GetUsageRequest())
    assert (everything.total.prompt_tokens, everything.total.completion_tokens) == (600, 60)
    assert everything.total.turns == 3 and not everything.groups
    by_model = await client.usage.GetUsage(
        us.GetUsageRequest(group_by=us.USAGE_GROUP_BY_MODEL, start_time=stamp(before))
    )
    assert {g.key: (g.usage.total_tokens, g.usage.turns) for g in by_model.groups} == {
        "gpt-4o-mini": (440, 2),
        "model-b": (220, 1),
    }
    by_session = await client.usage.GetUsage(us.GetUsageRequest(group_by=us.USAGE_GROUP_BY_SESSION))
    assert [(g.key, g.usage.total_tokens) for g in by_session.groups] == [("s1", 330), ("s2", 330)]
    by_day = await client.usage.GetUsage(us.GetUsageRequest(group_by=us.USAGE_GROUP_BY_DAY))
    today = datetime.now(UTC).date().isoformat()
    assert [(g.key, g.usage.turns) for g in by_day.groups] == [(today, 3)] or (
        # the suite ran across midnight UTC
        sum(g.usage.turns for g in by_day.groups) == 3
    )
    past = await client.usage.GetUsage(us.GetUsageRequest(end_time=stamp(before)))
    assert past.total.turns == 0

    tokens_in = await metrics.value(
        "agent_runtime_tenant_tokens_total", tenant="default", model="gpt-4o-mini", direction="in"
    )
    tokens_out = await metrics.value(  # model-b: a model the server is not configured with
        "agent_runtime_tenant_tokens_total", tenant="default", model="other", direction="out"
    )
    assert (tokens_in, tokens_out) == (400, 20)


async def test_a_time_range_the_wrong_way_round_is_invalid(client: Client) -> None:
    now = datetime.now(UTC)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.usage.GetUsage(
            us.GetUsageRequest(start_time=stamp(now), end_time=stamp(now - timedelta(hours=1)))
        )
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.field_violations] == ["end_time"]
