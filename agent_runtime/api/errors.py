"""One mapping from domain errors to gRPC statuses with google.rpc details (AIP-193)."""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from agent_runtime.application import log_context
from agent_runtime.domain import errors

log = logging.getLogger(__name__)

ERROR_DOMAIN = "agent-runtime"
# The metadata key of a call's request id (api.rpc_observer), in the trailers of every error.
REQUEST_ID_KEY = "x-request-id"
RETRY_DELAY_SECONDS = 1

# Most specific class first: the first match along the exception's MRO wins.
_STATUS_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.SessionBusy: grpc.StatusCode.ABORTED,
    errors.WriteConflict: grpc.StatusCode.ABORTED,
    errors.PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unsupported: grpc.StatusCode.UNIMPLEMENTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StorageUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.TurnAbandoned: grpc.StatusCode.UNAVAILABLE,
    errors.ModelTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ModelRequestRejected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelProtocolError: grpc.StatusCode.UNKNOWN,
    errors.InternalError: grpc.StatusCode.INTERNAL,
}


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def code_name(error: errors.DomainError) -> str:
    """The gRPC code name for an Error chunk, e.g. 'UNAVAILABLE'."""
    return str(status_code_for(error).name)


# Error texts may echo what a client sent; keep them well inside gRPC's metadata limits.
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_status(error: errors.DomainError) -> grpc.Status:
    code = status_code_for(error)
    details = [
        error_details_pb2.ErrorInfo(
            reason=error.reason,
            domain=ERROR_DOMAIN,
            metadata={k: _clip(v, MAX_DETAIL_CHARS) for k, v in error.metadata.items()},
        )
    ]
    if isinstance(error, errors.InvalidInput) and error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=_clip(v.description, MAX_DETAIL_CHARS * 2)
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, errors.Overloaded) and error.quota_violations:
        details.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=_clip(v.subject, MAX_DETAIL_CHARS),
                        description=_clip(v.description, MAX_DETAIL_CHARS * 2),
                    )
                    for v in error.quota_violations
                ]
            )
        )
    delay: float = RETRY_DELAY_SECONDS
    if isinstance(error, errors.QuotaExceeded):
        delay = error.retry_after  # until the quota's window lets one more in
    if error.retryable:
        details.append(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=max(1, math.ceil(delay)))
            )
        )
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(
        status_pb2.Status(
            code=code.value[0], message=_clip(error.message, MAX_MESSAGE_CHARS), details=packed
        )
    )


def internal_error(exc: BaseException) -> errors.InternalError:
    """Log an unexpected exception under a fresh error id; the client sees only the id."""
    error_id = uuid.uuid4().hex
    log.error(
        "unexpected error (error id %s)", error_id, exc_info=exc, extra={"error_id": error_id}
    )
    return errors.InternalError(
        f"internal error (error id {error_id})", metadata={"error_id": error_id}
    )


async def abort(
    context: grpc.aio.ServicerContext[object, object], error: errors.DomainError
) -> NoReturn:
    status = to_status(error)
    # The status's trailers replace any set before: keep the request id among them.
    if request_id := log_context.current()["request_id"]:
        status = status._replace(
            trailing_metadata=(*status.trailing_metadata, (REQUEST_ID_KEY, request_id))
        )
    await context.abort_with_status(status)
    raise AssertionError("abort_with_status returned")  # pragma: no cover


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Self = TypeVar("_Self")

UnaryMethod = Callable[
    [_Self, _Request, grpc.aio.ServicerContext[_Request, _Response]], Awaitable[_Response]
]


def unary_errors(
    method: UnaryMethod[_Self, _Request, _Response],
) -> UnaryMethod[_Self, _Request, _Response]:
    """Translate what a unary servicer method raises into a status with details."""

    @functools.wraps(method)
    async def wrapper(
        self: _Self, request: _Request, context: grpc.aio.ServicerContext[_Request, _Response]
    ) -> _Response:
        try:
            return await method(self, request, context)
        except errors.DomainError as error:
            await abort(context, error)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort(context, internal_error(exc))

    return wrapper
