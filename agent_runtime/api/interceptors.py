"""Server interceptors: what every RPC gets before its servicer runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent_runtime.api.errors import abort
from agent_runtime.domain.errors import InvalidInput


class Undecodable:
    """Stands in for a request whose bytes are not the message the method takes."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def check_decoded(request: object) -> None:
    """Streaming servicers call this first (unary ones are checked here, by the interceptor)."""
    if isinstance(request, Undecodable):
        raise InvalidInput(
            f"the request is not a valid protobuf message: {request.problem}",
            reason="MALFORMED_REQUEST",
        )


OUR_SERVICES = "/agent_runtime.v1."


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bytes that do not decode get INVALID_ARGUMENT instead of gRPC's generic UNKNOWN."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.request_streaming
            or handler.request_deserializer is None
            or not handler_call_details.method.startswith(OUR_SERVICES)
        ):
            return handler
        deserialize = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _checked_unary(handler.unary_unary), deserialize, handler.response_serializer
            )
        # Server streaming: grpc.aio needs the servicer's own async generator function, and a
        # wrapper would cost a hop per chunk, so the servicer calls check_decoded itself.
        return grpc.unary_stream_rpc_method_handler(
            handler.unary_stream, deserialize, handler.response_serializer
        )


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, and anything a broken payload may raise
            return Undecodable(type(exc).__name__)

    return tolerant


def _checked_unary(behavior: Any) -> Any:
    async def checked(request: Any, context: Any) -> Any:
        try:
            check_decoded(request)
        except InvalidInput as error:
            await abort(context, error)
        return await behavior(request, context)

    return checked
