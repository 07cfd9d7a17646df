"""Every step of a conversation survives a server restart between any two requests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses
from tests.support.fake_model_server import (
    FakeModelServer,
    ScriptedResponse,
    text_answer,
    tool_call_answer,
)
from tests.support.grpc_helpers import decision, tool_result, user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess

SCRIPT: list[tuple[rt.StreamMessageRequest, list[Callable[[], ScriptedResponse]]]] = [
    (
        user_message("s1", "fix the bug"),
        [lambda: tool_call_answer("read_file", {"path": "a.py"}, call_id="call_r")],
    ),
    (
        tool_result("s1", "call_r", "def f(): return 1/0"),
        [
            lambda: tool_call_answer(
                "write_file", {"path": "a.py", "content": "v1"}, call_id="call_w1"
            )
        ],
    ),
    (
        decision("s1", "call_w1", rt.DECISION_REJECT, feedback="use a guard"),
        [
            lambda: tool_call_answer(
                "write_file", {"path": "a.py", "content": "v2"}, call_id="call_w2"
            )
        ],
    ),
    (decision("s1", "call_w2", rt.DECISION_EDIT, edited={"path": "a.py", "content": "v3"}), []),
    (tool_result("s1", "call_w2", "written"), [lambda: text_answer("Fixed with a guard.")]),
    (user_message("s1", "thanks"), [lambda: text_answer("You're welcome.")]),
]


def snapshot(messages: list[ses.Message]) -> list[tuple[Any, ...]]:
    return [
        (
            m.role,
            m.content,
            m.tool_call_id,
            m.is_error,
            [(c.call_id, c.tool_name, dict(c.arguments)) for c in m.tool_calls],
        )
        for m in messages
    ]


async def run_script(
    model: FakeModelServer, db: Path, *, restart_every_request: bool
) -> list[tuple[Any, ...]]:
    env = {"AGENT_RUNTIME_LLM_BASE_URL": model.base_url}
    server = ServerProcess(db, env=env)
    await server.start()
    try:
        for request, answers in SCRIPT:
            model.enqueue(*(make() for make in answers))
            async with grpc.aio.insecure_channel(server.address) as channel:
                chunks = await connect(channel).turn(request)
            assert chunks[-1].HasField("turn_completed"), chunks
            assert chunks[-1].turn_completed.stop_reason != rt.STOP_REASON_ERROR, chunks
            if restart_every_request:
                assert await server.terminate() == 0, server.output()
                server = ServerProcess(db, env=env)
                await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            page = await connect(channel).sessions.ListMessages(
                ses.ListMessagesRequest(session_id="s1")
            )
        return snapshot(list(page.messages))
    finally:
        assert await server.terminate() == 0, server.output()


# Starts the server once per request (about 20 s on a 2-core machine with 2 workers).
@pytest.mark.timeout(180)
async def test_restart_between_every_two_requests_gives_the_same_history(
    tmp_path: Path,
) -> None:
    async with FakeModelServer() as model:
        steady = await run_script(model, tmp_path / "steady.db", restart_every_request=False)
        restarted = await run_script(model, tmp_path / "restarted.db", restart_every_request=True)
    assert restarted == steady
    assert len(steady) == 10
    assert steady[-1][1] == "You're welcome."
