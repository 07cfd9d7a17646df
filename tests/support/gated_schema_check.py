"""GatedSchemaCheck: the real check of a declared schema's validity, counted, and held on
its thread until a test lets it go."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agent_runtime.application import declared_tools
from agent_runtime.domain.tool_schemas import schema_validity_problem


class GatedSchemaCheck:
    """Stands in for tool_schemas.schema_validity_problem where declared_tools calls it
    (`install`): runs it, counting the calls and the threads they ran on; while `holding`,
    each call first waits for `release`."""

    def __init__(self, *, holding: bool = False) -> None:
        self.calls = 0
        self.threads: set[str] = set()
        self.holding = holding
        self.entered = threading.Event()
        self.release = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> GatedSchemaCheck:
        monkeypatch.setattr(declared_tools, "schema_validity_problem", self)
        return self

    def __call__(self, schema: dict[str, Any]) -> str | None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.holding:
            self.entered.set()
            if not self.release.wait(30):
                raise AssertionError("the test never released the check")
        return schema_validity_problem(schema)

    async def wait_until_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "no check started"
