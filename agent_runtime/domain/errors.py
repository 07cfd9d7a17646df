"""Errors the domain and the use cases raise.

Each class is a category the api layer maps to one gRPC status code; `reason` is
the machine-readable UPPER_SNAKE_CASE value clients switch on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """A limit that was hit: `subject` says whose use it counts (e.g. "tenant:team-a")."""

    subject: str
    description: str


class DomainError(Exception):
    default_reason = "ERROR"
    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retryable = self.default_retryable if retryable is None else retryable


class InvalidInput(DomainError):
    """The request itself is wrong; sending it again will not help."""

    default_reason = "INVALID_INPUT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = violations or []

    @classmethod
    def field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidInput:
        return cls(
            f"{field}: {description}",
            violations=[FieldViolation(field, description)],
            reason=reason,
        )


class Unauthenticated(DomainError):
    """The caller did not prove who it is (no API key, or one the server does not know)."""

    default_reason = "UNAUTHENTICATED"


class NotFound(DomainError):
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    default_reason = "ALREADY_EXISTS"


class SessionBusy(DomainError):
    """Another turn is running in this session; retry once it has finished."""

    default_reason = "SESSION_BUSY"
    default_retryable = True


class WriteConflict(DomainError):
    """A concurrent request wrote the same key first; reading again shows what it wrote."""

    default_reason = "WRITE_CONFLICT"
    default_retryable = True


class PreconditionFailed(DomainError):
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(DomainError):
    """A cursor points outside what can be served."""

    default_reason = "OUT_OF_RANGE"


class Overloaded(DomainError):
    """The server is at a configured limit; retry after a short wait."""

    default_reason = "RESOURCE_EXHAUSTED"
    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        quota_violations: Sequence[QuotaViolation] = (),
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.quota_violations = tuple(quota_violations)


class Unsupported(DomainError):
    default_reason = "UNIMPLEMENTED"


class StorageUnavailable(DomainError):
    """The database cannot be read or written right now (down, locked, disk full, read-only)."""

    default_reason = "STORAGE_UNAVAILABLE"
    default_retryable = True


class TurnAbandoned(DomainError):
    """The process running the turn stopped (a crash, a kill, a lost lease) before the turn
    ended. Its input is stored: sending it again, with a new client_message_id, may work."""

    default_reason = "TURN_INTERRUPTED"
    default_retryable = True


class ModelError(DomainError):
    """The model endpoint failed. Subclasses say how."""

    default_reason = "MODEL_ERROR"


class ModelUnavailable(ModelError):
    """Could not reach the endpoint, it dropped the stream, or it answered 429/5xx."""

    default_reason = "MODEL_UNAVAILABLE"
    default_retryable = True


class ModelTimeout(ModelError):
    default_reason = "MODEL_TIMEOUT"
    default_retryable = True


class ModelRequestRejected(ModelError):
    """The endpoint refused the request (4xx other than 429): configuration or input."""

    default_reason = "MODEL_REQUEST_REJECTED"


class ModelProtocolError(ModelError):
    """The endpoint answered something that is not a valid chat completion."""

    default_reason = "MODEL_BAD_RESPONSE"


class InternalError(DomainError):
    """A bug. The message carries an error id that is also in the log."""

    default_reason = "INTERNAL"


class QuotaExceeded(Overloaded):
    """The tenant is past one of its quotas; retry once `retry_after` seconds have passed."""

    default_reason = "QUOTA_EXCEEDED"

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        violation: QuotaViolation,
        retry_after: float,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, quota_violations=(violation,))
        self.violation = violation
        self.retry_after = retry_after
