"""BlockingAgentRuntimeClient against grpc_testing's channel: the test plays the server's side of
every call (the requests and metadata it gets, the responses, status codes and google.rpc
details it sends back), while the client runs in a thread of its own and blocks as it would in
a script or a WSGI worker."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import grpc_testing  # type: ignore[import-untyped]  # ships no type hints
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from agent_runtime.client import (
    AgentRuntimeError,
    BlockingAgentRuntimeClient,
    FieldViolation,
    RetryPolicy,
    approve,
)
from agent_runtime.v1 import agent_pb2, event_pb2
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses

_T = TypeVar("_T")

QUICK_RETRIES = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.01)
WAIT = 10.0  # seconds a test waits for the client's thread before it counts as stuck

SERVICES = {
    "runtime": rt.DESCRIPTOR.services_by_name["AgentRuntimeService"],
    "sessions": ses.DESCRIPTOR.services_by_name["SessionService"],
    "agents": agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    "events": event_pb2.DESCRIPTOR.services_by_name["EventService"],
}


def method(service: str, name: str) -> Any:
    return SERVICES[service].methods_by_name[name]


STREAM_MESSAGE = method("runtime", "StreamMessage")
RESUME_STREAM = method("runtime", "ResumeStream")
GET_SESSION = method("sessions", "GetSession")


@pytest.fixture
def channel() -> grpc_testing.Channel:
    return grpc_testing.channel(SERVICES.values(), grpc_testing.strict_real_time())


@pytest.fixture
def client(channel: grpc_testing.Channel) -> Iterator[BlockingAgentRuntimeClient]:
    with BlockingAgentRuntimeClient(
        "test", api_key="key-1", retry=QUICK_RETRIES, channel=channel
    ) as client:
        yield client


def in_background(work: Callable[[], _T]) -> Future[_T]:
    """Runs the client's blocking call in a daemon thread, so that a client stuck on a call
    nobody answers cannot hold the test run up after the test has failed.

    A stream is read a chunk at a time (next() in the background, then the chunk sent) where
    the call ends in an error next: grpc_testing drops responses the client has not read yet
    when a call fails, as a broken connection may."""
    future: Future[_T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def waited(work: Callable[[], _T]) -> _T:
    """What a blocking step of the played server returns, or a failure after WAIT seconds
    (where the client never makes the call it waits for)."""
    return in_background(work).result(WAIT)


# A call the client made: its metadata, its request, and the handle that plays its server.
Taken = tuple[tuple[tuple[str, str], ...], Any, Any]


def take_unary(channel: grpc_testing.Channel, rpc_method: Any) -> Taken:
    taken: Taken = waited(lambda: channel.take_unary_unary(rpc_method))
    return taken


def take_stream(channel: grpc_testing.Channel, rpc_method: Any) -> Taken:
    taken: Taken = waited(lambda: channel.take_unary_stream(rpc_method))
    return taken


def cancelled(rpc: Any) -> None:
    """Returns once the client has cancelled the call (grpc_testing raises on any other end)."""
    waited(rpc.cancelled)


def failure(
    code: grpc.StatusCode, message: str, *details: Message, request_id: str = ""
) -> tuple[tuple[tuple[str, str | bytes], ...], grpc.StatusCode, str]:
    """A status as the server sends it: trailing metadata with grpc-status-details-bin (and
    x-request-id, as the runtime adds), the code and the message."""
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=packed)
    )
    trailing = tuple(status.trailing_metadata)
    if request_id:
        trailing += (("x-request-id", request_id),)
    return trailing, status.code, status.details


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=seconds))
    return error_details_pb2.RetryInfo(retry_delay=delay)


UNAVAILABLE = ((), grpc.StatusCode.UNAVAILABLE, "connection reset")
OK = ((), grpc.StatusCode.OK, "")


def chunk(seq: int, turn_id: str = "turn_1", session_id: str = "s1", **kind: Any) -> rt.StreamChunk:
    return rt.StreamChunk(session_id=session_id, turn_id=turn_id, seq=seq, **kind)


def delta(seq: int, text: str) -> rt.StreamChunk:
    return chunk(seq, assistant_delta=rt.AssistantDelta(text=text))


TURN_STARTED = chunk(1, turn_started=rt.TurnStarted())
FINAL = chunk(4, assistant_message=rt.AssistantMessage(content="one two"))
COMPLETED = chunk(5, turn_completed=rt.TurnCompleted(stop_reason=rt.STOP_REASON_END_TURN))


def started_turn(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> tuple[Generator[rt.StreamChunk, None, None], Any, rt.StreamMessageRequest]:
    """A turn the client started in session s1 and whose TurnStarted it has read: the chunks
    to come, the call's server side, and the request."""
    stream = client.stream_message("s1", "count", client_message_id="k1")
    first = in_background(lambda: next(stream))
    _, request, rpc = take_stream(channel, STREAM_MESSAGE)
    rpc.send_response(TURN_STARTED)
    assert first.result(WAIT) == TURN_STARTED
    return stream, rpc, request


def test_a_unary_call_sends_its_request_with_the_bearer_key(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    session = in_background(lambda: client.get_session("s1"))
    metadata, request, rpc = take_unary(channel, GET_SESSION)
    assert request == ses.GetSessionRequest(session_id="s1")
    assert ("authorization", "Bearer key-1") in metadata
    rpc.terminate(ses.GetSessionResponse(session=ses.Session(session_id="s1", title="t")), *OK)
    assert session.result(WAIT) == ses.Session(session_id="s1", title="t")


def test_without_a_key_no_authorization_is_sent(channel: grpc_testing.Channel) -> None:
    anonymous = BlockingAgentRuntimeClient("test", channel=channel)
    agents = in_background(anonymous.list_agents)
    metadata, _, rpc = take_unary(channel, method("agents", "ListAgents"))
    assert "authorization" not in dict(metadata)
    rpc.terminate(agent_pb2.ListAgentsResponse(agents=[agent_pb2.Agent(name="coder")]), *OK)
    assert [a.name for a in agents.result(WAIT)] == ["coder"]


def test_a_failure_is_an_agent_runtime_error_with_the_google_rpc_details(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    created = in_background(lambda: client.create_session("bad id!"))
    _, request, rpc = take_unary(channel, method("sessions", "CreateSession"))
    assert request.session_id == "bad id!"
    rpc.terminate(
        ses.CreateSessionResponse(),
        *failure(
            grpc.StatusCode.INVALID_ARGUMENT,
            "session_id: use 1-128 of [A-Za-z0-9._-]",
            error_details_pb2.ErrorInfo(
                reason="INVALID_SESSION_ID", domain="agent-runtime", metadata={"field": "id"}
            ),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="session_id", description="use 1-128 of [A-Za-z0-9._-]"
                    )
                ]
            ),
            request_id="req-7",
        ),
    )
    with pytest.raises(AgentRuntimeError) as raised:
        created.result(WAIT)
    error = raised.value
    assert (error.code, error.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "session_id: use 1-128 of [A-Za-z0-9._-]",
    )
    assert (error.reason, error.domain, error.metadata) == (
        "INVALID_SESSION_ID",
        "agent-runtime",
        {"field": "id"},
    )
    assert error.field_violations == [FieldViolation("session_id", "use 1-128 of [A-Za-z0-9._-]")]
    assert error.retry_delay is None
    assert error.request_id == "req-7"
    assert (
        str(error)
        == "INVALID_ARGUMENT (INVALID_SESSION_ID): session_id: use 1-128 of [A-Za-z0-9._-]"
    )


def test_a_read_is_retried_on_unavailable(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    session = in_background(lambda: client.get_session("s1"))
    _, first, rpc = take_unary(channel, GET_SESSION)
    rpc.terminate(ses.GetSessionResponse(), *UNAVAILABLE)
    _, second, rpc = take_unary(channel, GET_SESSION)
    assert second == first
    rpc.terminate(ses.GetSessionResponse(session=ses.Session(session_id="s1")), *OK)
    assert session.result(WAIT).session_id == "s1"


def test_retries_stop_after_max_attempts(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    session = in_background(lambda: client.get_session("s1"))
    for _ in range(QUICK_RETRIES.max_attempts):
        _, _, rpc = take_unary(channel, GET_SESSION)
        rpc.terminate(ses.GetSessionResponse(), *UNAVAILABLE)
    with pytest.raises(AgentRuntimeError) as raised:
        session.result(WAIT)  # a further attempt would wait for an answer that never comes
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("call", "rpc_method", "response"),
    [
        (
            lambda c: c.create_session("s1"),
            ("sessions", "CreateSession"),
            ses.CreateSessionResponse(),
        ),
        (
            lambda c: c.delete_session("s1"),
            ("sessions", "DeleteSession"),
            ses.DeleteSessionResponse(),
        ),
        (
            lambda c: c.cancel_turn("s1", "turn_1"),
            ("runtime", "CancelTurn"),
            rt.CancelTurnResponse(),
        ),
    ],
    ids=["create_session", "delete_session", "cancel_turn"],
)
def test_a_write_that_cannot_be_repeated_safely_is_not_retried(
    channel: grpc_testing.Channel,
    client: BlockingAgentRuntimeClient,
    call: Callable[[BlockingAgentRuntimeClient], object],
    rpc_method: tuple[str, str],
    response: Message,
) -> None:
    outcome = in_background(lambda: call(client))
    _, _, rpc = take_unary(channel, method(*rpc_method))
    rpc.terminate(response, *UNAVAILABLE)
    with pytest.raises(AgentRuntimeError) as raised:
        outcome.result(WAIT)  # a retry would wait for an answer that never comes
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_aborted_is_retried_only_when_the_server_attached_retry_info(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    busy = error_details_pb2.ErrorInfo(reason="SESSION_BUSY", domain="agent-runtime")
    session = in_background(lambda: client.get_session("s1"))
    _, _, rpc = take_unary(channel, GET_SESSION)
    rpc.terminate(
        ses.GetSessionResponse(),
        *failure(grpc.StatusCode.ABORTED, "busy", busy, retry_info(0.005)),
    )
    _, _, rpc = take_unary(channel, GET_SESSION)
    rpc.terminate(ses.GetSessionResponse(), *failure(grpc.StatusCode.ABORTED, "busy", busy))
    with pytest.raises(AgentRuntimeError) as raised:
        session.result(WAIT)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.ABORTED, "SESSION_BUSY")


def test_a_quota_that_asks_for_a_longer_wait_than_the_policy_waits_is_not_retried(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    quota = error_details_pb2.ErrorInfo(reason="TOKEN_QUOTA_EXCEEDED", domain="agent-runtime")
    stream = client.stream_message("s1", "more", client_message_id="k1")
    first = in_background(lambda: next(stream))
    _, _, rpc = take_stream(channel, STREAM_MESSAGE)
    rpc.terminate(*failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "over", quota, retry_info(3600)))
    with pytest.raises(AgentRuntimeError) as raised:
        first.result(WAIT)  # at once: no hour-long wait, no pointless attempts
    assert (raised.value.reason, raised.value.retry_delay) == ("TOKEN_QUOTA_EXCEEDED", 3600.0)


def test_no_retry_is_waited_for_beyond_the_call_s_time_budget(
    channel: grpc_testing.Channel,
) -> None:
    slow_retries = RetryPolicy(initial_backoff=5.0, max_backoff=5.0)
    client = BlockingAgentRuntimeClient("test", retry=slow_retries, channel=channel)
    session = in_background(lambda: client.get_session("s1", timeout=1.0))
    _, _, rpc = take_unary(channel, GET_SESSION)
    rpc.terminate(ses.GetSessionResponse(), *UNAVAILABLE)
    with pytest.raises(AgentRuntimeError) as raised:
        session.result(WAIT)  # at once, not after the 4-5 s backoff
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_turn_is_sent_again_unchanged_when_it_fails_before_its_first_chunk(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    chunks = in_background(lambda: list(client.stream_message("", approve("call_1"))))
    metadata, first, rpc = take_stream(channel, STREAM_MESSAGE)
    assert ("authorization", "Bearer key-1") in metadata
    assert first.session_id.startswith("ses_") and first.client_message_id.startswith("cmsg_")
    assert first.approval_decision == rt.ApprovalDecision(
        call_id="call_1", decision=rt.DECISION_APPROVE
    )
    rpc.terminate(*UNAVAILABLE)

    _, second, rpc = take_stream(channel, STREAM_MESSAGE)
    assert second == first  # same session id and client_message_id: the server runs it once
    started = chunk(1, session_id=first.session_id, turn_started=rt.TurnStarted())
    rpc.send_response(started)
    rpc.terminate(*OK)
    assert chunks.result(WAIT) == [started]


def test_a_stream_broken_mid_turn_resumes_after_the_last_seq_without_duplicates(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    stream, rpc, request = started_turn(channel, client)
    assert (request.user_message.content, request.client_message_id) == ("count", "k1")
    pending = in_background(lambda: next(stream))
    rpc.send_response(delta(2, "one "))
    received = [TURN_STARTED, pending.result(WAIT)]
    rest = in_background(lambda: list(stream))
    rpc.terminate(*UNAVAILABLE)  # the connection broke mid-turn

    metadata, resume, rpc = take_stream(channel, RESUME_STREAM)
    assert ("authorization", "Bearer key-1") in metadata
    assert resume == rt.ResumeStreamRequest(session_id="s1", turn_id="turn_1", after_seq=2)
    for sent in (delta(2, "one "), delta(3, "two"), FINAL, COMPLETED):  # seq 2 again: replayed
        rpc.send_response(sent)
    rpc.terminate(*OK)

    received += rest.result(WAIT)
    assert [c.seq for c in received] == [1, 2, 3, 4, 5]
    assert received[-1] == COMPLETED


def test_each_chunk_that_arrives_starts_a_fresh_series_of_attempts(
    channel: grpc_testing.Channel,
) -> None:
    two_attempts = RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.01)
    client = BlockingAgentRuntimeClient("test", retry=two_attempts, channel=channel)
    stream = client.resume_stream("s1", "turn_1", after_seq=1)
    pending = in_background(lambda: next(stream))
    received = []
    for after_seq, sent in ((1, delta(2, "one ")), (2, delta(3, "two"))):
        _, resume, rpc = take_stream(channel, RESUME_STREAM)
        assert resume.after_seq == after_seq
        rpc.send_response(sent)
        received.append(pending.result(WAIT))
        pending = in_background(lambda: next(stream))  # waits across the break
        rpc.terminate(*UNAVAILABLE)  # breaks after progress: the retry count starts again
    _, resume, rpc = take_stream(channel, RESUME_STREAM)
    assert resume.after_seq == 3
    rpc.send_response(COMPLETED)
    received.append(pending.result(WAIT))
    rpc.terminate(*OK)
    assert [c.seq for c in received] == [2, 3, 5]


def test_a_failure_that_is_not_retryable_ends_the_stream_with_the_error(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    stream, rpc, _ = started_turn(channel, client)
    rest = in_background(lambda: list(stream))
    rpc.terminate(
        *failure(
            grpc.StatusCode.PERMISSION_DENIED,
            "no",
            error_details_pb2.ErrorInfo(reason="PERMISSION_DENIED", domain="agent-runtime"),
        )
    )
    with pytest.raises(AgentRuntimeError) as raised:
        rest.result(WAIT)  # a retry would wait for an answer that never comes
    assert raised.value.reason == "PERMISSION_DENIED"


def test_closing_the_stream_early_cancels_the_call(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    stream, rpc, _ = started_turn(channel, client)
    stream.close()
    cancelled(rpc)


def test_listings_follow_the_next_page_token(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    listed = in_background(lambda: [s.session_id for s in client.list_sessions(page_size=2)])
    pages = [(["a", "b"], "p2"), (["c"], "")]
    token = ""
    for ids, next_token in pages:
        _, request, rpc = take_unary(channel, method("sessions", "ListSessions"))
        assert request == ses.ListSessionsRequest(page_size=2, page_token=token)
        sessions = [ses.Session(session_id=i) for i in ids]
        rpc.terminate(ses.ListSessionsResponse(sessions=sessions, next_page_token=next_token), *OK)
        token = next_token
    assert listed.result(WAIT) == ["a", "b", "c"]


def test_pending_approvals_and_messages_are_listed_for_their_session(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    approvals = in_background(lambda: list(client.list_pending_approvals("s1")))
    _, request, rpc = take_unary(channel, method("sessions", "ListPendingApprovals"))
    assert request == ses.ListPendingApprovalsRequest(session_id="s1")
    pending = ses.PendingApproval(call_id="c1", tool_name="write_file")
    rpc.terminate(ses.ListPendingApprovalsResponse(approvals=[pending]), *OK)
    assert approvals.result(WAIT) == [pending]

    messages = in_background(lambda: list(client.list_messages("s1", page_size=5)))
    _, request, rpc = take_unary(channel, method("sessions", "ListMessages"))
    assert request == ses.ListMessagesRequest(session_id="s1", page_size=5)
    message = ses.Message(position=1, role=ses.ROLE_USER, content="hi")
    rpc.terminate(ses.ListMessagesResponse(messages=[message]), *OK)
    assert messages.result(WAIT) == [message]


def event(event_id: int) -> event_pb2.WatchEventsResponse:
    return event_pb2.WatchEventsResponse(event=event_pb2.Event(event_id=event_id, session_id="s1"))


def test_watching_events_reopens_after_the_last_event_received(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    watch_events = method("events", "WatchEvents")
    events = client.watch_events(session_id="s1")
    first = in_background(lambda: next(events))
    _, request, rpc = take_stream(channel, watch_events)
    assert not request.HasField("after_event_id")  # from now on
    rpc.send_response(event(7))
    assert first.result(WAIT).event_id == 7
    second = in_background(lambda: next(events))
    rpc.terminate(*UNAVAILABLE)
    _, request, rpc = take_stream(channel, watch_events)
    assert (request.session_id, request.after_event_id) == ("s1", 7)
    rpc.send_response(event(8))
    assert second.result(WAIT).event_id == 8
    events.close()
    cancelled(rpc)


def test_watching_events_without_a_cursor_is_not_reopened_before_the_first_event(
    channel: grpc_testing.Channel, client: BlockingAgentRuntimeClient
) -> None:
    events = in_background(lambda: list(client.watch_events()))
    _, _, rpc = take_stream(channel, method("events", "WatchEvents"))
    rpc.terminate(*UNAVAILABLE)  # reopened "from now on", the events in the gap would be lost
    with pytest.raises(AgentRuntimeError) as raised:
        events.result(WAIT)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
