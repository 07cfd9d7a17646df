"""WatchEvents: exactly the committed events, in order, resumable without gaps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from agent_runtime.v1 import event_pb2 as ev
from tests.support.databases import query
from tests.support.fake_model_server import FakeModelServer, http_error, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import Client

TYPE_NAMES = {v: k for k, v in ev.EventType.items()}


async def committed_events(database_url: str) -> list[tuple[Any, ...]]:
    return list(
        await query(database_url, "SELECT event_id, type, turn_id FROM events ORDER BY event_id")
    )


async def read_until(call: Any, count: int) -> list[ev.Event]:
    events = []
    async for response in call:
        events.append(response.event)
        if len(events) == count:
            break
    return events


async def test_subscriber_sees_exactly_the_committed_events_in_order(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    watch = client.events.WatchEvents(ev.WatchEventsRequest(after_event_id=0))
    assert dict(await watch.initial_metadata())["x-event-cursor"] == "0"

    model_server.enqueue(text_answer("fine"), http_error(400, "bad request"))
    ok = await client.turn(user_message("s1", "first"))
    failed = await client.turn(user_message("s1", "second"))
    stored = await committed_events(database_url)

    seen = await asyncio.wait_for(read_until(watch, len(stored)), 10)
    watch.cancel()
    assert [(e.event_id, TYPE_NAMES[e.type], e.turn_id) for e in seen] == [
        (i, "EVENT_TYPE_" + t.upper().replace(".", "_"), turn) for i, t, turn in stored
    ]

    failed_turn = [TYPE_NAMES[e.type] for e in seen if e.turn_id == failed[0].turn_id]
    assert failed_turn == [
        "EVENT_TYPE_TURN_STARTED",
        "EVENT_TYPE_MESSAGE_PERSISTED",
        "EVENT_TYPE_MODEL_REQUEST_STARTED",
        "EVENT_TYPE_MODEL_REQUEST_FAILED",
        "EVENT_TYPE_TURN_FAILED",
    ]
    completed = next(
        e
        for e in seen
        if e.turn_id == ok[0].turn_id and e.type == ev.EVENT_TYPE_MODEL_REQUEST_COMPLETED
    )
    assert completed.data["completion_tokens"] == 7


async def test_resume_from_a_cursor_without_gaps_or_duplicates(
    client: Client, model_server: FakeModelServer, database_url: str
) -> None:
    model_server.default_response = text_answer("ok")
    for i in range(3):
        await client.turn(user_message("s1", f"q{i}"))

    first = client.events.WatchEvents(ev.WatchEventsRequest(after_event_id=0))
    head = await read_until(first, 5)
    first.cancel()

    for i in range(2):  # more events while nobody listens
        await client.turn(user_message("s1", f"later {i}"))
    total = len(await committed_events(database_url))
    resumed = client.events.WatchEvents(ev.WatchEventsRequest(after_event_id=head[-1].event_id))
    tail = await asyncio.wait_for(read_until(resumed, total - 5), 10)
    resumed.cancel()
    ids = [e.event_id for e in head + tail]
    assert ids == list(range(1, total + 1))


async def test_live_from_now_with_filters(client: Client, model_server: FakeModelServer) -> None:
    model_server.default_response = text_answer("ok")
    await client.turn(user_message("old", "before the watch"))
    await client.turn(user_message("other", "unrelated"))

    watch = client.events.WatchEvents(
        ev.WatchEventsRequest(session_id="old", event_types=[ev.EVENT_TYPE_TURN_COMPLETED])
    )
    await watch.initial_metadata()  # the cursor is fixed: everything after this is seen
    await client.turn(user_message("other", "still unrelated"))
    chunks = await client.turn(user_message("old", "after the watch"))

    (event,) = await asyncio.wait_for(read_until(watch, 1), 10)
    watch.cancel()
    assert (event.session_id, event.turn_id, event.type) == (
        "old",
        chunks[0].turn_id,
        ev.EVENT_TYPE_TURN_COMPLETED,
    )
    assert json.loads(json.dumps(dict(event.data)))["stop_reason"] == "end_turn"


async def test_bad_watch_request_is_invalid_argument(client: Client) -> None:
    call = client.events.WatchEvents(ev.WatchEventsRequest(session_id="bad id"))
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    else:
        raise AssertionError("expected INVALID_ARGUMENT")
