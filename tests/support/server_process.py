"""`agent-runtime serve` as a real child process, for restart and crash tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

_LISTENING = re.compile(rb"listening on [\d.]+:(\d+)")


class ServerProcess:
    def __init__(self, database: Path | str, *, env: Mapping[str, str] | None = None) -> None:
        """`database`: a SQLite file, or any database URL."""
        url = f"sqlite+aiosqlite:///{database}" if isinstance(database, Path) else database
        self._env = {
            **os.environ,
            "AGENT_RUNTIME_LISTEN": "127.0.0.1:0",
            "AGENT_RUNTIME_DATABASE_URL": url,
            # A test with the built-in fake model waits for nothing between its words.
            "AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS": "0",
            **(env or {}),
        }
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.port = 0
        self.log: list[bytes] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, startup_seconds: float = 30.0) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_runtime",
            "serve",
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stderr is not None
        try:
            async with asyncio.timeout(startup_seconds):
                while not self.port:
                    line = await self._process.stderr.readline()
                    if not line:
                        raise AssertionError("server exited early:\n" + self.output())
                    self.log.append(line)
                    if found := _LISTENING.search(line):
                        self.port = int(found.group(1))
        except TimeoutError:
            self.kill()
            raise AssertionError("server did not start:\n" + self.output()) from None
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            self.log.append(line)

    def output(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    async def terminate(self) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        return await self._wait()

    async def kill_hard(self) -> int:
        """SIGKILL: a crash, nothing gets to clean up."""
        self.kill()
        return await self._wait()

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def _wait(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        if self._drain is not None:
            await self._drain
        return code
