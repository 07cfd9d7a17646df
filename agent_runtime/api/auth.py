"""API-key authentication: every call to our services names the tenant it acts for.

The interceptor resolves the key once per call and leaves the tenant in a context variable
(each RPC runs in its own task, so the value never leaks into another call); servicers read
it with caller_tenant() and put it into the commands and queries they hand on. Health and
reflection stay open, so load balancers and grpcurl work without a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import grpc

from agent_runtime.api.errors import abort
from agent_runtime.api.interceptors import OUR_SERVICES
from agent_runtime.application import log_context
from agent_runtime.domain.errors import Unauthenticated
from agent_runtime.domain.tenants import DEFAULT_TENANT

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
BEARER = "bearer "

_caller_tenant: ContextVar[str] = ContextVar("caller_tenant")


def caller_tenant() -> str:
    """The tenant of the call being served; set by ApiKeyInterceptor before any servicer runs.

    Unset means a servicer was reached without the interceptor: a wiring bug, so it raises
    (and the call fails as INTERNAL) rather than falling back to some tenant.
    """
    return _caller_tenant.get()


class ApiKeys:
    """Which tenant each key belongs to. Empty: development mode, one default tenant."""

    def __init__(self, tenants_by_key: Mapping[str, str]) -> None:
        # Only digests are kept: every comparison then runs over equal-length values.
        self._entries = [(_digest(key), tenant) for key, tenant in tenants_by_key.items()]

    @property
    def development_mode(self) -> bool:
        return not self._entries

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._entries)} keys)"  # never the keys themselves

    def tenant_for(self, key: str) -> str | None:
        """The key's tenant, or None. Constant time: every entry is compared, no early exit."""
        presented = _digest(key)
        found: str | None = None
        for digest, tenant in self._entries:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_key(metadata: Mapping[str, str]) -> str | None:
    """The key from `authorization: Bearer <key>` or `x-api-key: <key>`, if any."""
    authorization = metadata.get(AUTHORIZATION_HEADER, "")
    if authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER) :].strip() or None
    return metadata.get(API_KEY_HEADER, "").strip() or None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls to our services without a known key (UNAUTHENTICATED, unary and
    streaming alike) and records the caller's tenant for the servicers."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not handler_call_details.method.startswith(OUR_SERVICES):
            return await continuation(handler_call_details)  # health, reflection
        if self._keys.development_mode:
            _caller_tenant.set(DEFAULT_TENANT)
            log_context.bind(tenant_id=DEFAULT_TENANT)
            return await continuation(handler_call_details)
        metadata = {
            str(name): value
            for name, value in handler_call_details.invocation_metadata or ()
            if isinstance(value, str)
        }
        key = presented_key(metadata)
        if key is None:
            refusal = Unauthenticated(
                "this server needs an API key: send 'authorization: Bearer <key>' or "
                "'x-api-key: <key>' metadata",
                reason="API_KEY_MISSING",
            )
        elif (tenant := self._keys.tenant_for(key)) is None:
            refusal = Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        else:
            _caller_tenant.set(tenant)
            log_context.bind(tenant_id=tenant)
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _refusing(handler, refusal)


def _refusing(handler: grpc.RpcMethodHandler | None, error: Unauthenticated) -> Any:
    """A handler of the same shape that ends the call with `error` and never reads the
    request (an unauthenticated payload is not even decoded)."""
    if handler is None:
        return None  # unknown method: gRPC answers UNIMPLEMENTED

    def ignore(_data: bytes) -> None:
        return None

    async def refuse_unary(_request: Any, context: Any) -> Any:
        await abort(context, error)

    async def refuse_stream(_request: Any, context: Any) -> Any:
        await abort(context, error)
        yield  # pragma: no cover - makes this an async generator, as grpc.aio expects

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            refuse_unary, ignore, handler.response_serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream, ignore, handler.response_serializer
        )
    # Client-streaming methods: none in our services today; refuse them all the same.
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            refuse_unary, ignore, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(refuse_stream, ignore, handler.response_serializer)
