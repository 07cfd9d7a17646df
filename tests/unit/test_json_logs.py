"""JSON log lines: the context ids, and the error id of an unexpected exception (the same id
the client is told), with the traceback only in the log."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agent_runtime.api.errors import internal_error
from agent_runtime.application import log_context
from agent_runtime.domain import chunks
from agent_runtime.domain.errors import DomainError
from agent_runtime.infrastructure.observability.logs import JsonFormatter
from tests.fakes import ScriptedModel, text_answer
from tests.unit.test_turn_handler import make_handler, run


class JsonLines:
    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    def __call__(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]


@pytest.fixture
def json_log() -> Iterator[JsonLines]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("agent_runtime")
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield JsonLines(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_an_unexpected_error_in_a_turn_logs_its_error_id_with_the_turn(
    json_log: JsonLines,
) -> None:
    model = ScriptedModel(text_answer("lost"))
    handler, uows = make_handler(model)
    uows.db.failing_commits[2] = RuntimeError("disk on fire")  # commit #2
    log_context.bind(request_id="req-1")
    stream = await run(handler, "hi")

    error = stream[-2].body
    assert isinstance(error, chunks.TurnError)
    error_id = error.error.metadata["error_id"]
    assert "disk on fire" not in error.error.message  # the client gets the id, not the text
    [logged] = [line for line in json_log() if line.get("error_id")]
    assert logged["error_id"] == error_id
    assert logged["level"] == "ERROR"
    assert "disk on fire" in logged["exception"]
    assert (logged["request_id"], logged["session_id"], logged["turn_id"]) == (
        "req-1",
        "s1",
        stream[0].turn_id,
    )


def test_internal_error_logs_the_id_it_gives_the_client(json_log: JsonLines) -> None:
    def failed_request() -> DomainError:
        log_context.bind(request_id="req-2")
        try:
            raise ValueError("secret internals")
        except ValueError as exc:
            return internal_error(exc)

    # A context of its own, as an RPC's task has: the binding must not outlive this test.
    error = contextvars.copy_context().run(failed_request)

    [logged] = json_log()
    assert logged["error_id"] == error.metadata["error_id"]
    assert error.metadata["error_id"] in error.message
    assert "secret internals" not in error.message
    assert "secret internals" in logged["exception"]
    assert logged["request_id"] == "req-2"
