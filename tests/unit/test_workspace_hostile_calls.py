"""The terminal client's tools against a hostile model: whatever the arguments and whatever is
in the workspace, a call ends (as a result or an error result), in bounded time and memory,
and a cancel (Ctrl-C) stops it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent_runtime.client import tool_result
from agent_runtime.terminal.clipped import MAX_RESULT_CHARS
from agent_runtime.terminal.workspace import MAX_READ_CHARS, ToolOutcome, Workspace
from tests.support.child_processes import SEARCH_WORKER, children_running
from tests.support.waiting import eventually

_Result = TypeVar("_Result")
CATASTROPHIC = "^(a+)+$"  # on "aaa...a!" it backtracks 2**n times


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("the needle\n")
    return root


@pytest.fixture
def ws(root: Path) -> Workspace:
    return Workspace(root, command_timeout=5)


@pytest.fixture
def fifo(root: Path) -> Iterator[Path]:
    path = root / "a.pipe"
    os.mkfifo(path)
    yield path
    # A tool that wrongly blocked on opening it (reading) is released: it sees the end.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def finishes(work: Coroutine[Any, Any, _Result], within: float = 10.0) -> _Result:
    """`work`, run on an event loop of its own in a daemon thread: a tool that blocks its
    event loop fails the test instead of hanging it."""
    outcome: list[_Result] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(asyncio.run(work))
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not await asyncio.to_thread(done.wait, within):
        raise AssertionError(f"the tool did not finish within {within} s")
    if failure:
        raise failure[0]
    return outcome[0]


@pytest.mark.parametrize(
    ("encoding", "error"),
    [
        ("no-such-codec", "unknown encoding 'no-such-codec'"),
        ("rot13", "unknown encoding 'rot13'"),  # a codec, but not from bytes to text
        ("base64", "unknown encoding 'base64'"),
    ],
)
async def test_an_unknown_encoding_is_a_tool_error(
    ws: Workspace, encoding: str, error: str
) -> None:
    read = await ws.run("read_file", {"path": "notes.txt", "encoding": encoding})
    assert read == ToolOutcome(error, is_error=True)


async def test_another_encoding_is_used(ws: Workspace, root: Path) -> None:
    (root / "latin.txt").write_bytes("café\n".encode("latin-1"))
    assert await ws.run("read_file", {"path": "latin.txt", "encoding": "latin-1"}) == ToolOutcome(
        "café\n"
    )


async def test_a_symlink_loop_is_a_tool_error_and_walks_pass_it(ws: Workspace, root: Path) -> None:
    (root / "loop").symlink_to("loop")
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")
    for path in ("loop", "ping", "loop/deeper"):
        read = await ws.run("read_file", {"path": path})
        assert read.is_error and "Too many levels of symbolic links" in read.content
    written = await ws.run("write_file", {"path": "ping", "content": "x"})
    assert written.is_error
    listed = await ws.run("list_files", {"path": ".", "recursive": True})
    assert not listed.is_error and "notes.txt" in listed.content.splitlines()
    found = await ws.run("search_in_code", {"query": "needle"})
    assert found == ToolOutcome("notes.txt:1: the needle")


async def test_a_fifo_is_not_a_file_to_read_write_or_search(ws: Workspace, fifo: Path) -> None:
    read = await finishes(ws.run("read_file", {"path": "a.pipe"}))
    assert read == ToolOutcome("not a regular file: a.pipe", is_error=True)
    written = await finishes(ws.run("write_file", {"path": "a.pipe", "content": "x"}))
    assert written == ToolOutcome("not a regular file: a.pipe", is_error=True)
    found = await finishes(ws.run("search_in_code", {"query": "needle"}))
    assert found == ToolOutcome("notes.txt:1: the needle")
    alone = await finishes(ws.run("search_in_code", {"query": "needle", "path": "a.pipe"}))
    assert alone == ToolOutcome("no matches")


async def test_a_search_skips_binary_files_and_links_out_of_the_workspace(
    ws: Workspace, root: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("needle outside\n")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "blob.bin").write_bytes(b"\xff\xfe needle \x00\x81")
    found = await ws.run("search_in_code", {"query": "needle"})
    assert found == ToolOutcome("notes.txt:1: the needle")


async def test_a_catastrophic_regex_is_stopped_at_the_time_limit(root: Path) -> None:
    (root / "crafted.txt").write_text("aaaa\n" + "a" * 64 + "!\n")
    ws = Workspace(root, search_time_limit=1)
    searched = await ws.run("search_in_code", {"query": CATASTROPHIC, "regex": True})
    assert searched.is_error
    assert searched.content.startswith("search stopped after 1 s")
    assert searched.content.endswith("found so far:\ncrafted.txt:1: aaaa")
    await eventually(_no_search_workers, what="the search process to be gone")


async def test_a_cancelled_search_stops_at_once(ws: Workspace, root: Path) -> None:
    (root / "crafted.txt").write_text("a" * 64 + "!\n")
    searching = asyncio.create_task(
        ws.run("search_in_code", {"query": CATASTROPHIC, "regex": True})
    )

    async def worker_running() -> bool:
        return not await _no_search_workers()

    await eventually(worker_running, what="the search process")
    searching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await searching
    await eventually(_no_search_workers, what="the search process to be killed")


async def _no_search_workers() -> bool:
    return not children_running(os.getpid(), SEARCH_WORKER)


async def test_bad_search_arguments_are_tool_errors(ws: Workspace) -> None:
    for arguments in (
        {"query": "(", "regex": True},
        {"query": "a{99999999999}", "regex": True},
        {"query": "(" * 10_000 + ")" * 10_000, "regex": True},
    ):
        outcome = await ws.run("search_in_code", arguments)
        assert outcome.is_error and outcome.content.startswith("invalid regular expression")
    for limit in (0, -1, 10**9):
        outcome = await ws.run("search_in_code", {"query": "x", "max_results": limit})
        assert outcome == ToolOutcome("argument 'max_results' must be 1 to 1000", is_error=True)


async def test_a_huge_file_is_read_only_so_far(ws: Workspace, root: Path) -> None:
    huge = root / "huge.log"
    with huge.open("wb") as file:  # sparse: no disk used; read, it is all NUL characters
        file.truncate(MAX_READ_CHARS + 1_000_000)
    read = await ws.run("read_file", {"path": "huge.log"})
    assert not read.is_error
    assert len(read.content) <= MAX_RESULT_CHARS
    assert read.content.endswith(
        f"[... stopped reading at line 1, after {MAX_READ_CHARS} characters: "
        "ask for fewer lines with start_line and end_line]"
    )


async def test_a_line_range_of_a_file_with_long_lines(ws: Workspace, root: Path) -> None:
    long_line = "x" * 200_000
    (root / "min.js").write_text(f"{long_line}\nsecond\n{long_line}\nfourth\n")
    second = await ws.run("read_file", {"path": "min.js", "start_line": 2, "end_line": 2})
    assert second == ToolOutcome("second\n")
    fourth = await ws.run("read_file", {"path": "min.js", "start_line": 4})
    assert fourth == ToolOutcome("fourth\n")


async def test_a_command_printing_for_ever_is_stopped_with_its_output_bounded(
    ws: Workspace,
) -> None:
    loud = await ws.run("execute_command", {"command": "echo start; yes", "timeout": 1})
    assert loud.is_error and len(loud.content) <= MAX_RESULT_CHARS
    assert loud.content.startswith("timed out after 1 s: echo start; yes\nstart\ny\ny\n")
    assert "characters cut" in loud.content


async def test_file_names_that_are_not_utf8_can_be_sent_back(ws: Workspace, root: Path) -> None:
    os.close(os.open(os.fsencode(root) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY))
    listed = await ws.run("list_files", {"path": "."})
    assert listed == ToolOutcome("caf\\udce9.txt\nnotes.txt")
    tool_result("call_1", listed.content)  # valid UTF-8 on the wire


async def test_a_search_runs_the_clients_code_not_a_module_in_the_workspace(
    ws: Workspace, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that wrote agent_runtime/terminal/search.py into the workspace (the current
    directory, as often) does not get it run by the next search."""
    planted = root / "agent_runtime" / "terminal"
    planted.mkdir(parents=True)
    for package in (root / "agent_runtime", planted):
        (package / "__init__.py").write_text("")
    (planted / "search.py").write_text(
        "import pathlib\n"
        "pathlib.Path('ran.txt').write_text('model code ran')\n"
        "print('\"x:1: x\"')\n"
    )
    monkeypatch.chdir(root)
    found = await ws.run("search_in_code", {"query": "needle", "file_pattern": "*.txt"})
    assert found == ToolOutcome("notes.txt:1: the needle")
    assert not (root / "ran.txt").exists()


async def test_whatever_a_call_leads_to_is_a_tool_error(ws: Workspace) -> None:
    # Path.mkdir(parents=True) recurses once per missing directory: RecursionError.
    deep = await ws.run("create_directory", {"path": "d/" * 1500})
    assert deep.is_error and deep.content.startswith("create_directory failed: RecursionError")
    assert (await ws.run("read_file", {"path": "x" * 5000})).is_error  # name too long
