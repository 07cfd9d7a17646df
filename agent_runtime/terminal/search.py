"""search_in_code, run in a child process so that it can always be stopped.

Python's re cannot be interrupted, not even from another thread (the match holds the GIL): a
pattern that backtracks catastrophically on a crafted line would pin a core and freeze the
client. In a child process it runs off the event loop and is killed at the time limit, or
when the user presses Ctrl-C. The standard library's re keeps the search's syntax what the
model expects; a dependency (e.g. regex's timeout=) would not stop a slow directory walk.

The worker (`python -m agent_runtime.terminal.search`) reads one JSON request on stdin and
prints each match as a JSON string on its own line, flushed, so the matches found before a
stop are kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from agent_runtime.terminal.processes import started, stop
from agent_runtime.terminal.tree import open_regular, walk

MATCH_LINE_CHARS = 300


@dataclass(frozen=True, slots=True)
class SearchRequest:
    root: str  # the workspace (a real path)
    top: str  # the file or directory to search (a real path inside root)
    pattern: str  # a regular expression (re.escape'd text for a plain search)
    flags: int
    file_pattern: str
    limit: int
    max_file_bytes: int


@dataclass(frozen=True, slots=True)
class Searched:
    matches: list[str]  # "path:line: text", path relative to the workspace
    finished: bool  # False: stopped at the time limit


class SearchFailed(Exception):
    """The worker process failed; the message is its last word."""


async def search(request: SearchRequest, *, time_limit: float) -> Searched:
    """The matches, from a worker process stopped at `time_limit` seconds or when cancelled."""
    process = await started(
        asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the current directory first on the path: a workspace's own modules
            "-m",  # (e.g. one the model wrote) are not imported in place of the worker's
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group: the terminal's Ctrl-C reaches the client, which stops it.
            start_new_session=True,
        )
    )
    assert process.stdin and process.stdout and process.stderr
    matches: list[str] = []
    try:
        async with asyncio.timeout(time_limit):
            process.stdin.write(json.dumps(dataclasses.asdict(request)).encode())
            process.stdin.close()
            async for line in process.stdout:
                matches.append(json.loads(line))
            complaint = await process.stderr.read()
            await process.wait()
    except TimeoutError:
        return Searched(matches, finished=False)
    finally:
        if process.returncode is None:  # out of time, cancelled, or a broken line
            await stop(process)
    if process.returncode:
        last = complaint.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise SearchFailed(last[0] if last else f"exit status {process.returncode}")
    return Searched(matches, finished=True)


def _worker() -> None:
    request = SearchRequest(**json.load(sys.stdin))
    root, top = Path(request.root), Path(request.top)
    needle = re.compile(request.pattern, request.flags)
    files = [top] if top.is_file() else walk(root, top, recursive=True, all_dirs=False)
    found = 0
    for file in files:
        if not fnmatch.fnmatch(file.name, request.file_pattern):
            continue
        text = _text_of(file, request.max_file_bytes)
        if text is None:
            continue
        lines = text.split("\n")  # universal newlines: numbered as read_file numbers them
        if lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            if needle.search(line):
                shown = file.relative_to(root).as_posix()
                match = f"{shown}:{number}: {line.strip()[:MATCH_LINE_CHARS]}"
                print(json.dumps(match), flush=True)
                found += 1
                if found >= request.limit:
                    return


def _text_of(file: Path, max_bytes: int) -> str | None:
    """The file's text; None for what is not code to search: not a regular file (a FIFO
    would block), too big, unreadable, or not UTF-8 (binary)."""
    try:
        fd = open_regular(file)
    except OSError:
        return None
    with open(fd, encoding="utf-8", closefd=True) as opened:
        if os.fstat(fd).st_size > max_bytes:
            return None
        try:
            return opened.read(max_bytes)
        except (UnicodeDecodeError, OSError):
            return None


if __name__ == "__main__":
    _worker()
