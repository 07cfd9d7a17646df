"""examples/mcp/ide_bridge.py (an IDE exposing MCP tools as client-declared tools) runs
against a live server as examples/mcp/README.md shows."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mcp" / "ide_bridge.py"
README = ROOT / "examples" / "mcp" / "README.md"


def readme_runs() -> list[tuple[list[str], list[str]]]:
    """The README's console session: each command's arguments and the lines it prints."""
    block = README.read_text().split("```console\n", 1)[1].split("\n```", 1)[0]
    runs = []
    for entry in block.split("$ python examples/mcp/ide_bridge.py")[1:]:
        command, _, output = entry.partition("\n")
        lines = output.splitlines()
        argument = re.fullmatch(r" '(.*)'", command)
        runs.append(([argument.group(1)] if argument else [], [line for line in lines if line]))
    return runs


async def test_the_bridge_declares_runs_and_refuses_as_its_readme_shows(tmp_path: Path) -> None:
    runs = readme_runs()
    assert len(runs) == 3
    server = ServerProcess(
        tmp_path / "runtime.db",
        env={"AGENT_RUNTIME_LLM_BASE_URL": "", "AGENT_RUNTIME_FAKE_MODEL_WORD_DELAY_MS": "0"},
    )
    await server.start()
    try:
        for arguments, expected in runs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(EXAMPLE),
                *arguments,
                env={**os.environ, "AGENT_RUNTIME_TARGET": server.address},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, stderr.decode()
            assert stdout.decode().splitlines() == expected
    finally:
        await server.terminate()
