"""AgentRuntimeError: a failed call with its gRPC code and google.rpc details, typed."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "agent-runtime"
_REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class AgentRuntimeError(Exception):
    """A call the server (or the network) failed.

    `reason`, `domain` and `metadata` come from the google.rpc ErrorInfo detail ("" and {}
    when the status carries none, e.g. a connection failure); `field_violations` from
    BadRequest; `retry_delay` (seconds) from RetryInfo, set when the server says a retry may
    succeed. `request_id` is the id the server logged the call under ("" when it sent none).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        retry_delay: float | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.retry_delay = retry_delay
        self.request_id = request_id

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AgentRuntimeError:
        """From a failed call of either transport: a grpc.aio.AioRpcError, or the grpc.RpcError
        of a blocking channel (which is also its grpc.Call)."""
        result = cls(error.code(), error.details() or "")
        for key, value in error.trailing_metadata() or ():
            if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
                result._read_details(status_pb2.Status.FromString(value))
            elif key == _REQUEST_ID_KEY and isinstance(value, str):
                result.request_id = value
        return result

    def _read_details(self, status: status_pb2.Status) -> None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.domain = info.reason, info.domain
                self.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations = [
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                ]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()


class TurnInterrupted(AgentRuntimeError):
    """A turn a stream followed ended interrupted: the server process running it stopped (a
    crash, a kill -9) before the turn ended, and the runtime marked it so (the stream's
    Error chunk said TURN_INTERRUPTED). Its input is stored; no answer is. Sending the input
    again with a new client_message_id starts a new turn; the same key replays this one.
    `metadata` names the session_id and turn_id."""

    REASON = "TURN_INTERRUPTED"

    @classmethod
    def from_chunk(
        cls, code_name: str, message: str, *, session_id: str, turn_id: str
    ) -> TurnInterrupted:
        code = grpc.StatusCode.__members__.get(code_name, grpc.StatusCode.UNAVAILABLE)
        return cls(
            code,
            message,
            reason=cls.REASON,
            domain=ERROR_DOMAIN,
            metadata={"session_id": session_id, "turn_id": turn_id},
        )
