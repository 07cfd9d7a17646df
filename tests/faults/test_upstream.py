"""Model endpoint faults, end to end: what the client sees and what is recorded."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.databases import query
from tests.support.fake_model_server import (
    DONE_FRAME,
    FakeModelServer,
    RequestBody,
    ResponseWriter,
    ScriptedResponse,
    drop_connection_after,
    hang_until_disconnect,
    http_error,
    raw_sse,
    sse_frame,
    stall_after,
    text_answer,
)
from tests.support.grpc_helpers import kinds, user_message
from tests.support.runtime_fixtures import Client

QUICK_RETRIES = {"retry_base_delay": 0.01}
# Only for the tests of these timeouts: elsewhere a busy machine can miss a 0.3 s bound, and
# a retry then finds no scripted answer left (a flake seen under load).
FAST = {"first_token_timeout": 0.3, "idle_timeout": 0.3, **QUICK_RETRIES}


async def turn_rows(database_url: str) -> list[tuple[Any, ...]]:
    return list(await query(database_url, "SELECT status, error_reason FROM turns"))


async def assert_history_is(
    client: Client, question: str, partial: Sequence[rt.StreamChunk] = ()
) -> None:
    """The question, then the text the client saw before the failure, kept incomplete."""
    page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
    seen = "".join(c.assistant_delta.text for c in partial if c.HasField("assistant_delta"))
    expected = [(question, False)] + ([(seen, True)] if seen else [])
    assert [(m.content, m.incomplete) for m in page.messages] == expected


def error_of(chunks: list[rt.StreamChunk]) -> rt.Error:
    assert kinds(chunks)[-2:] == ["error", "turn_completed"], kinds(chunks)
    assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_ERROR
    return chunks[-2].error


class TestTimeouts:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"model": {**FAST, "max_attempts": 2}}

    async def test_stall_before_the_first_token(
        self, client: Client, model_server: FakeModelServer, database_url: str
    ) -> None:
        model_server.enqueue(hang_until_disconnect(), hang_until_disconnect())
        error = error_of(await client.turn(user_message("s1", "hello?")))
        assert (error.code, error.reason, error.retryable) == (
            "DEADLINE_EXCEEDED",
            "MODEL_FIRST_TOKEN_TIMEOUT",
            True,
        )
        assert len(model_server.requests) == 2  # retried once: no token had been sent
        assert await turn_rows(database_url) == [("failed", "MODEL_FIRST_TOKEN_TIMEOUT")]
        await assert_history_is(client, "hello?")

    async def test_stall_mid_stream(
        self, client: Client, model_server: FakeModelServer, database_url: str
    ) -> None:
        model_server.enqueue(stall_after("half "))
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[1].assistant_delta.text == "half "
        error = error_of(chunks)
        assert (error.code, error.reason) == ("DEADLINE_EXCEEDED", "MODEL_IDLE_TIMEOUT")
        assert len(model_server.requests) == 1  # a token was out: never retried
        assert await turn_rows(database_url) == [("failed", "MODEL_IDLE_TIMEOUT")]
        await assert_history_is(client, "hello?", chunks)


class TestTurnDeadline:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"turns": {"turn_timeout_seconds": 0.5}, "model": {"idle_timeout": 30.0}}

    async def test_a_turn_never_outlives_its_deadline(
        self, client: Client, model_server: FakeModelServer, database_url: str
    ) -> None:
        model_server.enqueue(stall_after("slow "))
        error = error_of(await client.turn(user_message("s1", "hello?")))
        assert (error.code, error.reason) == ("DEADLINE_EXCEEDED", "TURN_TIMEOUT")
        assert await turn_rows(database_url) == [("failed", "TURN_TIMEOUT")]
        got = await client.sessions.GetSession(ses.GetSessionRequest(session_id="s1"))
        assert got.session.running_turn_id == ""


class TestRefused:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return {"model": {**QUICK_RETRIES, "base_url": f"http://127.0.0.1:{port}/v1"}}

    async def test_refused_connection(self, client: Client, database_url: str) -> None:
        error = error_of(await client.turn(user_message("s1", "hello?")))
        assert (error.code, error.reason, error.retryable) == (
            "UNAVAILABLE",
            "MODEL_UNREACHABLE",
            True,
        )
        assert await turn_rows(database_url) == [("failed", "MODEL_UNREACHABLE")]


class TestEachHttpTransport:
    @pytest.fixture(params=["aiohttp", "httpx"])
    def settings_overrides(
        self, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
    ) -> dict[str, Any]:
        caplog.set_level(logging.INFO, logger="agent_runtime")  # start-up's log
        return {"model": {**QUICK_RETRIES, "http_transport": request.param}}

    async def test_answers_and_faults_over_the_transport(
        self,
        client: Client,
        model_server: FakeModelServer,
        settings_overrides: dict[str, Any],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        started = " ".join(record.getMessage() for record in caplog.get_records("setup"))
        assert f"(HTTP transport {settings_overrides['model']['http_transport']})" in started
        model_server.enqueue(text_answer("over the wire"), drop_connection_after("cut off", 1))
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[-2].assistant_message.content == "over the wire"
        error = error_of(await client.turn(user_message("s1", "again")))
        assert (error.code, error.reason) == ("UNAVAILABLE", "MODEL_STREAM_INTERRUPTED")


class TestFaultsThatAreRetried:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"model": QUICK_RETRIES}

    async def test_500_then_success_is_retried(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        model_server.enqueue(http_error(500), text_answer("second time lucky"))
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[-2].assistant_message.content == "second time lucky"
        assert len(model_server.requests) == 2

    async def test_429_with_retry_after(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        model_server.enqueue(http_error(429, headers={"Retry-After": "0"}), text_answer("ok"))
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[-2].assistant_message.content == "ok"
        assert len(model_server.requests) == 2


class TestFaultsThatEndTheTurn:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"model": QUICK_RETRIES}

    @pytest.mark.parametrize(
        ("response", "code", "reason"),
        [
            (raw_sse([b'data: {"choices": [ nonsense\n\n']), "UNKNOWN", "MODEL_BAD_RESPONSE"),
            (drop_connection_after("cut right here", 2), "UNAVAILABLE", "MODEL_STREAM_INTERRUPTED"),
            (
                http_error(400, '{"error": {"message": "bad model"}}'),
                "FAILED_PRECONDITION",
                "MODEL_HTTP_400",
            ),
        ],
    )
    async def test_faults_after_turn_started(
        self,
        client: Client,
        model_server: FakeModelServer,
        database_url: str,
        response: Any,
        code: str,
        reason: str,
    ) -> None:
        model_server.enqueue(response)
        chunks = await client.turn(user_message("s1", "hello?"))
        error = error_of(chunks)
        assert (error.code, error.reason) == (code, reason)
        assert await turn_rows(database_url) == [("failed", reason)]
        await assert_history_is(client, "hello?", chunks)
        model_server.enqueue(text_answer("recovered"))
        chunks = await client.turn(user_message("s1", "again"))
        assert chunks[-2].assistant_message.content == "recovered"


class TestUntrustedModelOutput:
    """What the model says is stored only as it can be read back (issue 18)."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"model": QUICK_RETRIES, "answers": {"max_answer_bytes": 64 * 1024}}

    async def test_lone_and_split_surrogates_are_stored_readable(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        # "\ud800" alone, then an emoji whose surrogate pair is split across two events.
        model_server.enqueue(
            raw_sse(
                [
                    sse_frame({"content": "lone \ud800, split \ud83d"}),
                    sse_frame({"content": "\ude00!"}, "stop"),
                    DONE_FRAME,
                ]
            )
        )
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[-2].assistant_message.content == "lone \ufffd, split \U0001f600!"
        page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
        assert [m.content for m in page.messages] == [
            "hello?",
            "lone \ufffd, split \U0001f600!",
        ]

    async def test_arguments_nested_too_deep_are_a_tool_error_the_model_reads(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        deep = '{"a": ' * 50 + '"x"' + "}" * 50  # past protobuf's decode depth
        call = {"index": 0, "id": "call_deep", "function": {"name": "read_file", "arguments": deep}}
        model_server.enqueue(
            raw_sse([sse_frame({"tool_calls": [call]}), sse_frame({}, "tool_calls"), DONE_FRAME]),
            text_answer("sorry, flatter this time"),
        )
        chunks = await client.turn(user_message("s1", "read it"))
        assert chunks[-2].assistant_message.content == "sorry, flatter this time"
        told = model_server.requests[1]["messages"][-1]
        assert told["role"] == "tool" and "nested deeper than 20 levels" in told["content"]
        page = await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))
        refused = page.messages[1].tool_calls[0]
        assert (refused.call_id, refused.tool_name, dict(refused.arguments)) == (
            "call_deep",
            "read_file",
            {},
        )

    async def test_implausible_usage_is_not_reported(
        self, client: Client, model_server: FakeModelServer
    ) -> None:
        usage = {"prompt_tokens": -1, "completion_tokens": 2**40}
        model_server.enqueue(
            raw_sse([sse_frame({"content": "ok"}, "stop", usage=usage), DONE_FRAME])
        )
        chunks = await client.turn(user_message("s1", "hello?"))
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
        assert chunks[-1].turn_completed.usage.total_tokens == 0

    async def test_an_answer_over_its_limit_ends_the_turn(
        self, client: Client, model_server: FakeModelServer, database_url: str
    ) -> None:
        model_server.enqueue(text_answer(" ".join(["word"] * 20_000)))  # 100 kB > 64 KiB
        error = error_of(await client.turn(user_message("s1", "hello?")))
        assert (error.code, error.reason, error.retryable) == (
            "UNKNOWN",
            "MODEL_ANSWER_TOO_LARGE",
            False,
        )
        assert len(model_server.requests) == 1
        assert await turn_rows(database_url) == [("failed", "MODEL_ANSWER_TOO_LARGE")]
        await client.sessions.ListMessages(ses.ListMessagesRequest(session_id="s1"))

    async def test_an_html_page_with_200_is_a_bad_response_not_retried(
        self, client: Client, model_server: FakeModelServer, database_url: str
    ) -> None:
        async def respond(request: RequestBody, out: ResponseWriter) -> None:
            await out.send_body(200, b"<html>proxy login</html>", content_type="text/html")

        model_server.default_response = ScriptedResponse(respond)
        error = error_of(await client.turn(user_message("s1", "hello?")))
        assert (error.code, error.reason, error.retryable) == (
            "UNKNOWN",
            "MODEL_BAD_RESPONSE",
            False,
        )
        assert len(model_server.requests) == 1
        assert await turn_rows(database_url) == [("failed", "MODEL_BAD_RESPONSE")]
