"""AgentRuntimeService: translates StreamMessage to the TurnHandler and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeAlias

import grpc

from agent_runtime.api.errors import abort, internal_error
from agent_runtime.api.mapping import chunk_to_proto
from agent_runtime.application.commands import SendUserMessage
from agent_runtime.application.turn_handler import TurnHandler
from agent_runtime.domain.errors import DomainError, InvalidInput, Unsupported
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc

Context: TypeAlias = grpc.aio.ServicerContext[rt.StreamMessageRequest, rt.StreamChunk]


class AgentRuntimeServicer(rt_grpc.AgentRuntimeServiceServicer):
    def __init__(self, turns: TurnHandler) -> None:
        self._turns = turns

    async def StreamMessage(
        self, request: rt.StreamMessageRequest, context: Context
    ) -> AsyncIterator[rt.StreamChunk]:
        command = _to_command(request)
        if isinstance(command, DomainError):
            await abort(context, command)
        try:
            # aclosing: if the client goes away the handler's generator is closed at once, so
            # its unit of work ends the turn and closes instead of waiting for the GC.
            async with aclosing(self._turns.handle(command)) as chunks:
                async for chunk in chunks:
                    yield chunk_to_proto(chunk)
        except DomainError as error:  # raised only before TurnStarted
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, internal_error(exc))


def _to_command(request: rt.StreamMessageRequest) -> SendUserMessage | DomainError:
    kind = request.WhichOneof("input")
    if kind is None:
        return InvalidInput.field(
            "input",
            "set one of user_message, tool_result, approval_decision, switch_agent",
            reason="MISSING_INPUT",
        )
    if kind != "user_message":
        return Unsupported(
            f"input '{kind}' is not supported by this server yet",
            reason="INPUT_NOT_SUPPORTED",
            metadata={"input": kind},
        )
    return SendUserMessage(
        session_id=request.session_id,
        content=request.user_message.content,
        client_message_id=request.client_message_id,
        agent=request.agent,
        model=request.model,
    )
