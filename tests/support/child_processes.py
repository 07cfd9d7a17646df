"""Child processes of a process, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
from pathlib import Path

SEARCH_WORKER = "agent_runtime.terminal.search"


def children_running(pid: int, module: str) -> list[int]:
    """The live child processes of `pid` running `python -m module` (a killed one that is
    not reaped yet is a zombie, with an empty command line: not counted)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            children += [int(c) for c in (task / "children").read_text().split()]
    return [child for child in children if module.encode() in _command_line(child)]


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile
