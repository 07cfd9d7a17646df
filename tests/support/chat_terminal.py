"""`agent-runtime chat` in a pseudo-terminal, driven as a person would, against a real server
process whose model endpoint is the scripted FakeModelServer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pexpect

from tests.support.fake_model_server import FakeModelServer
from tests.support.server_process import ServerProcess

APPROVAL_PROMPT = r"\[a\]pprove, a\[l\]ways, \[e\]dit, \[r\]eject\? "
PROMPT = "you> "


class Terminal:
    """`agent-runtime chat` in a pseudo-terminal. expect() runs in a thread, so the event loop
    (and the scripted model server on it) keeps serving while we wait for the screen."""

    # Every terminal opened, so that a fixture can end the clients a failed test left running.
    opened: ClassVar[list[Terminal]] = []

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "agent_runtime", "chat", *args],
            encoding="utf-8",
            timeout=20,
            dimensions=(50, 200),
            env={**os.environ, **(env or {})},
        )
        Terminal.opened.append(self)

    async def expect(self, pattern: str) -> str:
        await asyncio.to_thread(self.child.expect, pattern)
        return self.screen()

    async def expect_first(self, *patterns: str) -> int:
        """Which of `patterns` shows up first (its index); screen() has what came with it."""
        wanted: list[Any] = list(patterns)  # pexpect's stubs want a list of its pattern union
        return await asyncio.to_thread(lambda: self.child.expect(wanted))

    def screen(self) -> str:
        """What the client printed since the previous expect, up to what this one matched."""
        return str(self.child.before) + str(self.child.after)

    def type(self, line: str) -> None:
        self.child.sendline(line)

    async def leave(self, how: str = "ctrl-d") -> int:
        if how == "ctrl-d":
            self.child.sendeof()  # at the prompt
        else:
            self.type(how)
        await asyncio.to_thread(self.child.expect, pexpect.EOF)
        self.child.close()
        return int(self.child.exitstatus or 0)

    @classmethod
    def close_all(cls) -> None:
        """Ends the clients a failed test left running (e.g. hung in a tool)."""
        while cls.opened:
            child = cls.opened.pop().child
            if child.isalive():
                child.close(force=True)


@contextlib.asynccontextmanager
async def serving(
    model_server: FakeModelServer, tmp_path: Path, **env: str
) -> AsyncIterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "runtime.db",
        env={
            "AGENT_RUNTIME_LLM_BASE_URL": model_server.base_url,
            "AGENT_RUNTIME_LLM_API_KEY": "sk-test",
            **env,
        },
    )
    await process.start()
    try:
        yield process
    finally:
        await process.terminate()


def open_chat(server: ServerProcess, workspace: Path | None, **env: str) -> Terminal:
    """The client on session s1 (with `workspace`, if any), in a pseudo-terminal."""
    args = ["--target", server.address, "--session", "s1"]
    return Terminal(*args, *(["--workspace", str(workspace)] if workspace else []), env=env)


def tool_answer_sent(model_server: FakeModelServer, request_index: int) -> dict[str, Any]:
    """The tool message the runtime sent the model in its `request_index`-th request."""
    message: dict[str, Any] = model_server.requests[request_index]["messages"][-1]
    assert message["role"] == "tool"
    return message
