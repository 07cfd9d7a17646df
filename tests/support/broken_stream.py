"""A turn's stream broken mid-turn by a real TCP proxy, for either Python client's tests.

The model streams "one " and waits on the gate; the client has read TurnStarted and that
delta. Then the network path goes silent, the turn finishes on the server, and the path
breaks: the client must fetch the rest with ResumeStream after the last seq it received.
"""

from __future__ import annotations

import asyncio

from agent_runtime.client import AgentRuntimeClient
from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.fake_model_server import FakeModelServer, gated_answer
from tests.support.grpc_helpers import kinds
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually


def gate_the_answer(model_server: FakeModelServer) -> asyncio.Event:
    gate = asyncio.Event()
    model_server.enqueue(gated_answer(["one ", "two ", "three"], gate))
    return gate


async def break_after_the_turn_ends(
    proxy: TcpProxy, gate: asyncio.Event, direct: AgentRuntimeClient, session_id: str
) -> None:
    proxy.hold_replies()
    gate.set()

    async def turn_finished() -> bool:
        return not (await direct.get_session(session_id)).running_turn_id

    await eventually(turn_finished, what="the turn to finish on the server")
    proxy.reset_connections()


def assert_resumed_without_duplicates(
    received: list[rt.StreamChunk], proxy: TcpProxy, model_server: FakeModelServer
) -> None:
    assert kinds(received) == [
        "turn_started",
        "assistant_delta",
        "assistant_message",
        "turn_completed",
    ]
    seqs = [c.seq for c in received]
    assert seqs == sorted(set(seqs))  # no chunk twice, in order
    assert received[2].assistant_message.content == "one two three"
    assert received[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert proxy.connections_accepted == 2  # the resumed stream came over a new connection
    assert len(model_server.requests) == 1  # the model was asked once
