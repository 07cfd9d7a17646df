"""Reading google.rpc rich error details off a failed call."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

from agent_runtime.v1 import agent_runtime_pb2 as rt


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_info: error_details_pb2.RetryInfo | None = None


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    result = RichError(error.code(), error.details() or "")
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                result.error_info = error_details_pb2.ErrorInfo()
                detail.Unpack(result.error_info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                result.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                result.retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(result.retry_info)
    return result


def user_message(
    session_id: str, content: str, *, agent: str = "", model: str = "", client_message_id: str = ""
) -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id,
        agent=agent,
        model=model,
        client_message_id=client_message_id,
        user_message=rt.UserMessage(content=content),
    )


def kinds(chunks: list[rt.StreamChunk]) -> list[str]:
    return [c.WhichOneof("chunk") or "" for c in chunks]
