"""The README's Python client examples are examples/python/quickstart.py (async) and
examples/python/gateway.py (a web handler on the blocking client), and they run."""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "python" / "quickstart.py"
GATEWAY = ROOT / "examples" / "python" / "gateway.py"


def test_the_readme_shows_the_example_files_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks == [EXAMPLE.read_text(), GATEWAY.read_text()]


async def test_the_example_runs_against_a_live_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "runtime.db", env={"AGENT_RUNTIME_LLM_BASE_URL": ""})
    await server.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            env={**os.environ, "AGENT_RUNTIME_TARGET": server.address},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await server.terminate()
    assert process.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[:4] == [
        "This is the built-in fake model (no LLM configured). You said: hello",
        "approval needed: write_file notes.md",
        "approved, running write_file",
        "assistant: The tool returned: wrote 2 bytes to notes.md",
    ]
    assert lines[4:10] == [
        "1 hello",
        "2 This is the built-in fake model (no LLM configured). You sai",
        '3 /tool write_file {"path": "notes.md", "content": "hi"}',
        "4 ",
        "5 wrote 2 bytes to notes.md",
        "6 The tool returned: wrote 2 bytes to notes.md",
    ]
    assert lines[10:] == ["error: NOT_FOUND SESSION_NOT_FOUND"]


async def test_the_gateway_handler_answers_against_a_live_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ServerProcess(tmp_path / "runtime.db", env={"AGENT_RUNTIME_LLM_BASE_URL": ""})
    await server.start()
    monkeypatch.setenv("AGENT_RUNTIME_TARGET", server.address)
    gateway: dict[str, Any] = runpy.run_path(str(GATEWAY))
    post_message = gateway["post_message"]
    try:  # the handler blocks, as in a WSGI worker: off the loop that reads the server's log
        hello = await asyncio.to_thread(post_message, "web-1", "hello")
        ask = '/tool write_file {"path": "notes.md", "content": "hi"}'
        tool = await asyncio.to_thread(post_message, "web-1", ask)
        bad = await asyncio.to_thread(post_message, "bad id!", "hello")
    finally:
        gateway["client"].close()
        await server.terminate()
    assert hello == (
        {
            "answer": "This is the built-in fake model (no LLM configured). You said: hello",
            "tool_calls": [],
            "awaiting_approval": False,
        },
        200,
    )
    body, status = tool
    assert status == 200 and body["awaiting_approval"] is True
    [call] = body["tool_calls"]
    assert (call["tool"], call["arguments"]) == (
        "write_file",
        {"path": "notes.md", "content": "hi"},
    )
    assert bad[1] == 400 and bad[0]["error"] == "INVALID_SESSION_ID"
