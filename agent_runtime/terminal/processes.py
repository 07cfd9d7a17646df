"""Child processes a tool starts, each in its own process group: stopped with everything they
started when the tool is cancelled (Ctrl-C) or runs out of time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from typing import Any

Process = asyncio.subprocess.Process

# How long stop() reads what a killed process left in its pipes (see stop()).
DRAIN_SECONDS = 2.0
_DRAIN_BYTES = 64 * 1024


async def started(spawn: Coroutine[Any, Any, Process]) -> Process:
    """The process `spawn` starts (with start_new_session=True). Cancelled meanwhile, the
    process may already run (and have started children): it is stopped, then the cancel goes
    on (asyncio itself would kill only the process, not its group)."""
    starting = asyncio.ensure_future(spawn)
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        await stop(await starting)
        raise


async def stop(process: Process) -> None:
    """Kills the process's group and waits for the process.

    asyncio (3.11) ends wait() only once every pipe of the process is closed, and a pipe
    left full, its reading paused, never is: what is left in them is read and dropped. Every
    writer is dead by then, unless one left the process group (a daemon): after
    DRAIN_SECONDS the process is left to asyncio's child watcher, which reaps it anyway."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.stdin is not None:
        process.stdin.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            for pipe in (process.stdout, process.stderr):
                while pipe is not None and await pipe.read(_DRAIN_BYTES):
                    pass
            await process.wait()
