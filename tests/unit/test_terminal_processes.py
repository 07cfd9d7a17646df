"""Stopping a tool's child process never hangs the terminal client: not when its output was
left unread, not when a daemon it started still holds its pipe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_runtime.terminal import processes
from tests.support.waiting import eventually

# More than asyncio's stream buffer takes before it pauses reading the pipe (2 x 64 KiB).
UNREAD_BYTES = 150_000


async def shell(command: str, cwd: Path) -> processes.Process:
    return await processes.started(
        asyncio.create_subprocess_shell(
            command,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    )


@pytest.fixture
def daemon_pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where the test's daemon writes its pid; the daemon is killed if the test did not."""
    pid_file = tmp_path / "daemon.pid"
    yield pid_file
    if (pid := _pid_in(pid_file)) > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_process_whose_output_was_not_read_is_stopped(tmp_path: Path) -> None:
    written = tmp_path / "written"
    process = await shell(
        f"head -c {UNREAD_BYTES} /dev/zero && touch {written}; sleep 60", tmp_path
    )

    async def all_written() -> bool:
        return written.exists()

    await eventually(all_written, what="the output to be written")
    async with asyncio.timeout(10):  # a hang fails the test
        await processes.stop(process)
    assert process.returncode == -signal.SIGKILL


async def test_a_daemon_holding_the_pipe_does_not_keep_stop_waiting(
    tmp_path: Path, daemon_pid_file: Path
) -> None:
    process = await shell(
        f"setsid sh -c 'echo $$ > {daemon_pid_file}; exec sleep 60' & sleep 60", tmp_path
    )

    async def daemon_started() -> bool:
        return _pid_in(daemon_pid_file) > 0

    await eventually(daemon_started, what="the daemon")
    async with asyncio.timeout(processes.DRAIN_SECONDS + 10):
        await processes.stop(process)
    assert process.returncode == -signal.SIGKILL  # reaped, though its pipe is still open
    os.kill(_pid_in(daemon_pid_file), signal.SIGKILL)  # > 0: waited for above
    assert process.stdout is not None
    async with asyncio.timeout(10):
        assert await process.stdout.read() == b""  # the pipe ends with the daemon


def _pid_in(path: Path) -> int:
    """The pid written in `path`; 0 while there is none (never to be signalled: 0 is this
    process group)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() else 0
