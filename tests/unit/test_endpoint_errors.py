"""What each of httpx's failures becomes (endpoint_errors.exchange_error). The connect
timeouts are TimeoutExceptions too, and must still read as an unreachable endpoint
(MODEL_UNREACHABLE), not as a model that stopped answering (a timeout)."""

from __future__ import annotations

import httpx
import pytest

from agent_runtime.domain.errors import (
    ModelError,
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.infrastructure.llm.endpoint_errors import exchange_error


def _no_redaction(text: str) -> str:
    return text


@pytest.mark.parametrize(
    ("failure", "kind", "reason"),
    [
        (httpx.ConnectError("refused"), ModelUnavailable, "MODEL_UNREACHABLE"),
        (httpx.ConnectTimeout("slow"), ModelUnavailable, "MODEL_UNREACHABLE"),
        (httpx.PoolTimeout("full"), ModelUnavailable, "MODEL_UNREACHABLE"),
        (httpx.ProxyError("tunnel refused"), ModelUnavailable, "MODEL_UNREACHABLE"),
        (httpx.ReadTimeout("quiet"), ModelTimeout, None),
        (httpx.UnsupportedProtocol("ftp"), ModelRequestRejected, "MODEL_BAD_URL"),
        (httpx.InvalidURL("http://[::1"), ModelRequestRejected, "MODEL_BAD_URL"),
        (httpx.DecodingError("bad gzip"), ModelProtocolError, None),
        (httpx.ReadError("reset"), ModelUnavailable, "MODEL_STREAM_INTERRUPTED"),
        (httpx.RemoteProtocolError("not HTTP"), ModelUnavailable, "MODEL_STREAM_INTERRUPTED"),
        (httpx.TooManyRedirects("loop"), ModelUnavailable, None),
    ],
)
def test_each_failure_becomes_its_model_error(
    failure: httpx.HTTPError | httpx.InvalidURL, kind: type[ModelError], reason: str | None
) -> None:
    error = exchange_error(failure, _no_redaction)

    assert type(error) is kind
    if reason is not None:
        assert error.reason == reason
    assert str(failure) in error.message


def test_the_key_is_redacted_from_the_message() -> None:
    error = exchange_error(
        httpx.ConnectError("refused for sk-secret"), lambda t: t.replace("sk-secret", "[REDACTED]")
    )

    assert "sk-secret" not in error.message
    assert "[REDACTED]" in error.message
