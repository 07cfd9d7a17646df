"""DeclaredToolChecks: a schema found valid is remembered by its digest, one not seen before
is checked on the checks' own thread, and a refusal is exactly check_declared_tools's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agent_runtime.application.declared_tools import DeclaredToolChecks, schema_digest
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.tool_schemas import check_declared_tools
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition, declared_tool
from tests.support.gated_schema_check import GatedSchemaCheck

LINT = {"type": "object", "properties": {"path": {"type": "string", "pattern": "\\.py$"}}}
FORMAT = {"type": "object", "properties": {"line": {"type": "integer", "minimum": 1}}}
BROKEN = {"type": "object", "properties": {"p": {"pattern": "("}}}


def numbered(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{n}": {"type": "string"}}}


async def refusal(checks: DeclaredToolChecks, tools: Sequence[ToolDefinition]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        await checks.check(tools, "tools", reserved=TOOL_CATALOGUE)
    return caught.value


@pytest.mark.parametrize(
    "tools",
    [
        [declared_tool("lint", "", LINT), declared_tool("broken", "", BROKEN)],
        [declared_tool("read_file", "", LINT)],  # a clash alone, the schema never seen
        [declared_tool("read_file", "", BROKEN), declared_tool("ok", "", LINT)],  # both
        [declared_tool("bad name", "", BROKEN), declared_tool("x", "", {"type": "objekt"})],
        [declared_tool("x", "", {"type": "object"}), declared_tool("x", "", {"type": 3})],
        [declared_tool(f"t{i}", "", {"description": "x" * 60_000}) for i in range(5)],
    ],
    ids=["invalid", "clash", "clash-and-invalid", "bad-name", "twice", "too-large"],
)
async def test_a_refusal_is_exactly_the_domains_whether_the_schemas_are_new_or_not(
    tools: list[ToolDefinition],
) -> None:
    with pytest.raises(InvalidInput) as direct:
        check_declared_tools(tools, "tools", reserved=TOOL_CATALOGUE)
    checks = DeclaredToolChecks()

    for _ in ("never seen", "seen"):
        refused = await refusal(checks, tools)
        assert (refused.reason, refused.violations, str(refused)) == (
            direct.value.reason,
            direct.value.violations,
            str(direct.value),
        )


async def test_a_schema_found_valid_is_not_checked_again_and_is_checked_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = GatedSchemaCheck().install(monkeypatch)
    checks = DeclaredToolChecks()
    # The same schema twice in one declaration is checked once.
    first = [declared_tool("lint", "", LINT), declared_tool("lint_all", "", LINT)]

    await checks.check(first, "tools", reserved=TOOL_CATALOGUE)
    assert check.calls == 1
    await checks.check(first, "tools", reserved=TOOL_CATALOGUE)
    # Another tool's name, the keys in another order: the same JSON, the same digest.
    again = {"properties": LINT["properties"], "type": "object"}
    await checks.check([declared_tool("py_lint", "", again)], "tools", reserved=())
    assert check.calls == 1
    await checks.check([declared_tool("fmt", "", FORMAT)], "tools", reserved=())
    assert check.calls == 2
    assert threading.current_thread().name not in check.threads
    assert {name.split("_")[0] for name in check.threads} == {"schema-check"}


async def test_an_invalid_schema_is_checked_on_every_declaration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = GatedSchemaCheck().install(monkeypatch)
    checks = DeclaredToolChecks()
    for _ in range(3):
        await refusal(checks, [declared_tool("broken", "", BROKEN)])
    assert check.calls == 3


async def test_the_schemas_remembered_are_bounded_the_least_recently_used_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = GatedSchemaCheck().install(monkeypatch)
    checks = DeclaredToolChecks(remembered=2)
    for n in (1, 2, 1, 3):  # 1 used again after 2: 2 is forgotten when 3 comes
        await checks.check([declared_tool("t", "", numbered(n))], "tools", reserved=())
    assert check.calls == 3
    await checks.check([declared_tool("t", "", numbered(1))], "tools", reserved=())
    await checks.check([declared_tool("t", "", numbered(3))], "tools", reserved=())
    assert check.calls == 3
    await checks.check([declared_tool("t", "", numbered(2))], "tools", reserved=())
    assert check.calls == 4


async def test_tools_too_large_together_are_refused_before_any_schema_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = GatedSchemaCheck().install(monkeypatch)
    large = [declared_tool(f"t{i}", "", {"description": "x" * 60_000}) for i in range(5)]
    refused = await refusal(DeclaredToolChecks(), large)
    assert "at most 262144" in str(refused)
    assert check.calls == 0


async def test_a_check_whose_caller_is_cancelled_remembers_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = GatedSchemaCheck(holding=True).install(monkeypatch)
    checks = DeclaredToolChecks()
    held = asyncio.create_task(
        checks.check([declared_tool("lint", "", LINT)], "tools", reserved=())
    )
    await check.wait_until_entered()
    # Behind it on the one thread: cancelled before it starts, it never runs.
    queued = asyncio.create_task(checks.check([declared_tool("f", "", FORMAT)], "t", reserved=()))
    # One turn of the loop: it runs up to its wait for the thread (it awaits nothing before).
    await asyncio.sleep(0)
    held.cancel()
    queued.cancel()
    for task in (held, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    check.release.set()

    await checks.check([declared_tool("lint", "", LINT)], "tools", reserved=())
    # The held check ran to its end, its result dropped; the queued one never ran; the
    # declaration after them is checked anew.
    assert check.calls == 2


def test_the_digest_is_of_the_json_whatever_the_order_of_the_keys() -> None:
    assert schema_digest({"a": 1, "b": [1.0, "x"]}) == schema_digest({"b": [1.0, "x"], "a": 1})
    assert schema_digest({"a": 1}) != schema_digest({"a": 1.0})
    assert schema_digest({"a": True}) != schema_digest({"a": 1})
    assert len(schema_digest(LINT)) == 32
