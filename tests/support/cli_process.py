"""`agent-runtime ...` as a child process, awaited (the event loop keeps serving meanwhile)."""

from __future__ import annotations

import asyncio
import subprocess
import sys


async def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_runtime",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        list(args), process.returncode, stdout.decode(), stderr.decode()
    )
