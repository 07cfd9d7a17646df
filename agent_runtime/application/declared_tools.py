"""DeclaredToolChecks: the checks of the tools a client declares (tool_schemas.py), run so
that they cannot stall the server.

Checking a schema's validity costs about 3 ms for an ordinary tool's and up to seconds for
64 KiB of subschemas, and a client declares its tools again on every request. So:
- a schema found valid is remembered by the digest of its canonical JSON (LruDigests: the
  digests only, never the schemas): declared again, it costs a hash, not a check;
- a schema not remembered is checked on a thread of its own (one: checks wait for each other,
  and take at most one thread from the event loop), so other streams keep flowing;
- what costs little (names, descriptions, sizes) is checked on the event loop, first.
A refusal is exactly tool_schemas.check_declared_tools's. An RPC cancelled while its schemas
are checked leaves nothing behind: the check's result is dropped (a check not started yet
never runs), and only a check that ends with the caller still there remembers anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Collection, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from agent_runtime.application.lru_digests import LruDigests
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.tool_schemas import check_declared_tools, schema_validity_problem
from agent_runtime.domain.tools import ToolDefinition

# Digests of schemas found valid, kept (32 bytes each, under 200 with the LRU's own: less
# than 1 MB): many clients' tools, which are declared again on every request.
REMEMBERED_SCHEMAS = 4096


def schema_check_thread() -> ThreadPoolExecutor:
    """The one thread schemas are checked on, started at its first use."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="schema-check")


class DeclaredToolChecks:
    def __init__(
        self, remembered: int = REMEMBERED_SCHEMAS, thread: Executor | None = None
    ) -> None:
        """`thread`: where schemas are checked, off the event loop; the server passes one it
        shuts down (bootstrap.py); without one, a thread of its own, started at first use."""
        self._valid = LruDigests(remembered)
        self._thread = thread or schema_check_thread()

    async def check(
        self, tools: Sequence[ToolDefinition], field: str, *, reserved: Collection[str]
    ) -> None:
        """Raise InvalidInput as tool_schemas.check_declared_tools does."""
        unseen: dict[bytes, dict[str, Any]] = {}

        def unless_remembered(schema: dict[str, Any]) -> None:
            digest = schema_digest(schema)
            if not self._valid.remembers(digest):
                unseen[digest] = schema

        # On the event loop: all but the validity of the schemas not remembered, which is
        # looked at only if all else passes (the tools are then at most 256 KiB together).
        clashed = False
        try:
            check_declared_tools(tools, field, reserved=reserved, validity=unless_remembered)
        except InvalidInput:
            if not unseen:
                raise
            clashed = True  # names alone: the unseen schemas' problems are told with them
        if not unseen:
            return
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._thread, _validity_problems, unseen)
        problems: dict[bytes, str] = {}
        for digest, problem in found.items():
            if problem is None:
                self._valid.remember(digest)
            else:
                problems[digest] = problem
        if problems or clashed:  # the refusal, told as check_declared_tools tells it
            check_declared_tools(
                tools,
                field,
                reserved=reserved,
                validity=lambda schema: problems.get(schema_digest(schema)),
            )


def _validity_problems(schemas: dict[bytes, dict[str, Any]]) -> dict[bytes, str | None]:
    return {digest: schema_validity_problem(schema) for digest, schema in schemas.items()}


def schema_digest(schema: dict[str, Any]) -> bytes:
    """SHA-256 of the schema's canonical JSON (sorted keys, no spaces): two schemas have the
    same digest when they are the same JSON. Only for a schema within its bounds
    (tool_schemas.schema_bounds_problem): JSON, not nested deeper than Python may recurse."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).digest()
