"""What a model endpoint's failures become: ModelErrors for a failed exchange (httpx's
exceptions), an HTTP error status, a body that is not an answer, or an error document the
model sent in its stream. Their messages are excerpts, redacted: proxies and some providers
echo the Authorization header back in error bodies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from agent_runtime.domain.errors import (
    ModelError,
    ModelProtocolError,
    ModelRequestRejected,
    ModelTimeout,
    ModelUnavailable,
)
from agent_runtime.domain.text import storable, well_formed

Redactor = Callable[[str], str]

_EXCERPT_CHARS = 500
_ERROR_BODY_BYTES = 8192  # enough for any error message; a proxy's HTML page is not worth more

# Words in an error's type/code that mean "your request is wrong", so retrying cannot help.
_REJECTION_HINTS = (
    "invalid",
    "bad_request",
    "authentication",
    "unauthorized",
    "permission",
    "forbidden",
    "not_found",
    "context_length",
    "unsupported",
)


def exchange_error(exc: httpx.HTTPError | httpx.InvalidURL, redact: Redactor) -> ModelError:
    """The ModelError for an exchange that httpx could not complete."""
    described = excerpt(str(exc) or type(exc).__name__, redact)
    # The connect timeouts first: they are TimeoutExceptions too.
    if isinstance(
        exc,
        httpx.ConnectError  # refused, DNS, TLS handshake, the proxy unreachable
        | httpx.ConnectTimeout
        | httpx.PoolTimeout  # no free connection within the connect timeout
        | httpx.ProxyError,  # the proxy refused the tunnel
    ):
        return ModelUnavailable(
            f"cannot reach the model endpoint: {described}", reason="MODEL_UNREACHABLE"
        )
    if isinstance(exc, httpx.TimeoutException):  # the read or write timeout (a backstop)
        return ModelTimeout(f"the model endpoint timed out ({type(exc).__name__}): {described}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ModelRequestRejected(
            f"the model endpoint URL is not usable: {described}", reason="MODEL_BAD_URL"
        )
    if isinstance(exc, httpx.DecodingError):
        return ModelProtocolError(f"the model endpoint sent an undecodable body: {described}")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        # The peer closed mid-body, a broken chunk, a reset, a response head not HTTP...
        return ModelUnavailable(
            f"the connection to the model endpoint was lost: {described}",
            reason="MODEL_STREAM_INTERRUPTED",
        )
    return ModelUnavailable(f"the request to the model endpoint failed: {described}")


async def status_error(response: httpx.Response, redact: Redactor) -> ModelError:
    """A non-2xx answer: retryable if the endpoint is overloaded or failing (429, 5xx)."""
    status = response.status_code
    body = await _body_excerpt(response, redact)
    message = f"the model endpoint answered HTTP {status}"
    if body:
        message = f"{message}: {body}"
    metadata = {"http_status": str(status)}
    retry_after = response.headers.get("retry-after")
    if retry_after:
        metadata["retry_after"] = retry_after[:32]
    reason = f"MODEL_HTTP_{status}"
    if status == 429 or status >= 500:
        return ModelUnavailable(message, reason=reason, metadata=metadata)
    return ModelRequestRejected(message, reason=reason, metadata=metadata)


async def not_an_answer(
    response: httpx.Response, content_type: str, redact: Redactor
) -> ModelError:
    """A 2xx answer that is neither an event stream nor JSON (a proxy's HTML page)."""
    body = await _body_excerpt(response, redact)
    return ModelProtocolError(
        f"the model endpoint answered HTTP {response.status_code} with {content_type!r}, "
        f"not an event stream" + (f": {body}" if body else "")
    )


async def _body_excerpt(response: httpx.Response, redact: Redactor) -> str:
    raw = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) >= _ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass  # the status code already says what matters
    text = raw[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace")
    try:
        payload: Any = json.loads(text)
    except (ValueError, RecursionError):
        payload = None
    # Prefer the provider's own message over the raw JSON around it.
    return excerpt(error_text(payload) or text, redact)


def error_text(payload: object) -> str:
    """The human message in an error document: {"error": {"message": ...}} and variants."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def payload_error(error: object, redact: Redactor) -> ModelError:
    """An error object sent with HTTP 200 (typically mid-stream)."""
    message = error_text({"error": error})
    if not message:
        try:
            message = json.dumps(error)
        except (ValueError, RecursionError):
            message = "(unreadable)"
    kind = ""
    status: int | None = None
    if isinstance(error, dict):
        kind = " ".join(str(error.get(key, "")) for key in ("type", "code", "status")).lower()
        for key in ("code", "status"):
            value = error.get(key)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                status = value
                break
    text = f"the model endpoint reported an error: {excerpt(message, redact)}"
    if status is not None and 400 <= status < 500 and status != 429:
        return ModelRequestRejected(text)
    if "rate" not in kind and any(hint in kind for hint in _REJECTION_HINTS):
        return ModelRequestRejected(text)
    return ModelUnavailable(text, reason="MODEL_STREAM_ERROR")


def excerpt(text: str, redact: Redactor, limit: int = _EXCERPT_CHARS) -> str:
    """The start of `text`, on one line, redacted and well-formed, U+0000 as stored (it ends
    up in errors, and in the turn's record)."""
    # Redacted before truncating, so a key cut in half cannot survive.
    text = storable(well_formed(redact(" ".join(text.split()))))
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
