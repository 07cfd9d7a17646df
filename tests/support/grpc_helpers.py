"""Reading google.rpc rich error details off a failed call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # google.rpc.QuotaFailure: (subject, description) of each limit that was hit.
    quota_violations: list[tuple[str, str]] = field(default_factory=list)


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
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                result.quota_violations = [(v.subject, v.description) for v in quota.violations]
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


async def read_rest(call: Any) -> list[rt.StreamChunk]:
    """The remaining chunks of a call already read with call.read()."""
    rest = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        rest.append(chunk)
    return rest


def kinds(chunks: list[rt.StreamChunk]) -> list[str]:
    return [c.WhichOneof("chunk") or "" for c in chunks]


def tool_result(
    session_id: str, call_id: str, content: str, *, is_error: bool = False
) -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id,
        tool_result=rt.ToolResult(call_id=call_id, content=content, is_error=is_error),
    )


def decision(
    session_id: str,
    call_id: str,
    verdict: rt.Decision.ValueType,
    *,
    feedback: str = "",
    edited: dict[str, Any] | None = None,
) -> rt.StreamMessageRequest:
    approval = rt.ApprovalDecision(call_id=call_id, decision=verdict, feedback=feedback)
    if edited is not None:
        approval.edited_arguments.update(edited)
    return rt.StreamMessageRequest(session_id=session_id, approval_decision=approval)


def switch_agent(session_id: str, agent: str, reason: str = "") -> rt.StreamMessageRequest:
    return rt.StreamMessageRequest(
        session_id=session_id, switch_agent=rt.SwitchAgent(agent=agent, reason=reason)
    )


def only(chunks: list[rt.StreamChunk], kind: str) -> rt.StreamChunk:
    found = [c for c in chunks if c.WhichOneof("chunk") == kind]
    assert len(found) == 1, kinds(chunks)
    return found[0]
