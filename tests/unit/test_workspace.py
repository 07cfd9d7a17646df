"""The terminal client's tools: confined to the workspace, every catalogue tool answered."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.domain.tools import TOOL_CATALOGUE
from agent_runtime.terminal.clipped import NOTICE_ROOM, Clipped, truncated
from agent_runtime.terminal.tool_calls import CONVERSATION_TOOLS, RUNTIME_TOOLS
from agent_runtime.terminal.workspace import WORKSPACE_TOOLS, ToolOutcome, Workspace
from tests.support.waiting import eventually


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("secret")
    return tmp_path


@pytest.fixture
def root(outside: Path) -> Path:
    root = outside / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("import os\n\ndef main():\n    return 'Hello'\n")
    (root / "README.md").write_text("# Demo\nhello world\n")
    (root / "escape").symlink_to(outside)
    (root / "inner").symlink_to(root / "src")
    return root


@pytest.fixture
def ws(root: Path) -> Workspace:
    return Workspace(root, command_timeout=5)


def test_every_catalogue_tool_is_answered_by_the_terminal_client() -> None:
    assert set(TOOL_CATALOGUE) == WORKSPACE_TOOLS | CONVERSATION_TOOLS | RUNTIME_TOOLS
    assert not WORKSPACE_TOOLS & CONVERSATION_TOOLS


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "escape/secret.txt"}),
        ("read_file", {"path": "/etc/hostname"}),
        ("write_file", {"path": "../new.txt", "content": "x"}),
        ("write_file", {"path": "escape/new.txt", "content": "x"}),
        ("list_files", {"path": "src/../.."}),
        ("create_directory", {"path": "../made"}),
        ("delete_file", {"path": "escape/secret.txt"}),
        ("move_file", {"source": "README.md", "destination": "../README.md"}),
        ("move_file", {"source": "escape/secret.txt", "destination": "stolen.txt"}),
        ("search_in_code", {"query": "secret", "path": ".."}),
        ("execute_command", {"command": "pwd", "cwd": ".."}),
    ],
)
async def test_paths_leading_outside_are_refused(
    ws: Workspace, outside: Path, tool: str, arguments: dict[str, str]
) -> None:
    outcome = await ws.run(tool, arguments)
    assert outcome.is_error
    assert outcome.content.startswith("refused: ") and "outside the workspace" in outcome.content
    assert (outside / "secret.txt").read_text() == "secret"
    assert not (outside / "new.txt").exists() and not (outside / "made").exists()
    assert not (outside / "README.md").exists()


async def test_paths_inside_work_also_absolute_and_through_an_inner_symlink(
    ws: Workspace, root: Path
) -> None:
    assert await ws.run("read_file", {"path": str(root / "README.md")}) == ToolOutcome(
        "# Demo\nhello world\n"
    )
    inner = await ws.run("read_file", {"path": "inner/app.py", "start_line": 3, "end_line": 4})
    assert inner == ToolOutcome("def main():\n    return 'Hello'\n")


async def test_write_create_move_delete(ws: Workspace, root: Path) -> None:
    written = await ws.run("write_file", {"path": "docs/notes.md", "content": "héllo"})
    assert written == ToolOutcome("wrote 6 bytes to docs/notes.md")
    assert (root / "docs" / "notes.md").read_text() == "héllo"
    assert await ws.run("create_directory", {"path": "a/b"}) == ToolOutcome("created directory a/b")
    moved = await ws.run("move_file", {"source": "docs/notes.md", "destination": "a/b/n.md"})
    assert moved == ToolOutcome("moved docs/notes.md to a/b/n.md")
    taken = await ws.run("move_file", {"source": "README.md", "destination": "a/b/n.md"})
    assert taken == ToolOutcome("a/b/n.md exists already", is_error=True)
    assert await ws.run("delete_file", {"path": "a/b/n.md"}) == ToolOutcome("deleted a/b/n.md")
    assert (await ws.run("delete_file", {"path": "a"})).is_error
    missing = await ws.run("read_file", {"path": "a/b/n.md"})
    assert missing == ToolOutcome("No such file or directory: a/b/n.md", is_error=True)


async def test_list_files_leaves_out_symlinks_that_lead_outside(ws: Workspace) -> None:
    top = await ws.run("list_files", {"path": "."})
    assert top.content.splitlines() == ["README.md", "inner/", "src/"]
    deep = await ws.run("list_files", {"path": ".", "recursive": True, "pattern": "*.py"})
    assert deep.content.splitlines() == ["src/app.py"]


async def test_search_in_code(ws: Workspace) -> None:
    plain = await ws.run("search_in_code", {"query": "hello"})
    assert plain.content.splitlines() == [
        "README.md:2: hello world",
        "src/app.py:4: return 'Hello'",
    ]
    exact = await ws.run("search_in_code", {"query": "hello", "case_sensitive": True})
    assert exact.content.splitlines() == ["README.md:2: hello world"]
    regex = await ws.run(
        "search_in_code", {"query": r"^def \w+", "regex": True, "file_pattern": "*.py"}
    )
    assert regex.content == "src/app.py:3: def main():"
    limited = await ws.run("search_in_code", {"query": "o", "max_results": 1})
    assert limited.content.splitlines()[1] == "[... stopped after 1 matches]"
    bad = await ws.run("search_in_code", {"query": "(", "regex": True})
    assert bad.is_error and bad.content.startswith("invalid regular expression")


async def test_execute_command_runs_in_the_workspace(ws: Workspace, root: Path) -> None:
    ran = await ws.run("execute_command", {"command": "pwd", "cwd": "src"})
    assert ran == ToolOutcome(f"exit code 0\n{root / 'src'}\n")
    failed = await ws.run("execute_command", {"command": "echo oops >&2; exit 3"})
    assert failed == ToolOutcome("exit code 3\noops\n", is_error=True)
    slow = await ws.run("execute_command", {"command": "sleep 30", "timeout": 1})
    assert slow == ToolOutcome("timed out after 1 s: sleep 30", is_error=True)
    loud = await ws.run("execute_command", {"command": "yes | head -c 100000"})
    assert len(loud.content) < 20_100 and "characters cut" in loud.content


async def test_bad_arguments_are_tool_errors(ws: Workspace) -> None:
    assert await ws.run("read_file", {}) == ToolOutcome("missing argument 'path'", is_error=True)
    wrong = await ws.run("read_file", {"path": "README.md", "start_line": "1"})
    assert wrong == ToolOutcome("argument 'start_line' must be an integer", is_error=True)
    assert await ws.run("teleport", {}) == ToolOutcome("unknown tool 'teleport'", is_error=True)


def test_truncated_keeps_head_and_tail_within_the_limit() -> None:
    text = "a" * 150 + "b" * 150
    assert truncated(text, 200) == "a" * 76 + "\n[... 148 characters cut ...]\n" + "b" * 76
    assert len(truncated(text, 200)) <= 200
    assert truncated("short", 20) == "short"


@given(st.lists(st.text(max_size=300)), st.integers(min_value=0, max_value=400))
def test_text_clipped_piece_by_piece_is_the_whole_text_truncated(
    pieces: list[str], limit: int
) -> None:
    clipped = Clipped(limit)
    for piece in pieces:
        clipped.add(piece)
    whole = "".join(pieces)
    assert clipped.text() == truncated(whole, limit)
    assert len(clipped.text()) <= max(limit, NOTICE_ROOM)
    if len(whole) <= limit:
        assert clipped.text() == whole
    else:
        kept = max(limit - NOTICE_ROOM, 0) // 2
        assert clipped.text().startswith(whole[:kept])
        assert clipped.text().endswith(f"characters cut ...]\n{whole[len(whole) - kept :]}")


async def test_a_cancelled_command_is_killed_with_its_children(ws: Workspace, root: Path) -> None:
    command = "sh -c 'echo $$ > child.pid; exec sleep 60' & wait"
    running = asyncio.create_task(ws.run("execute_command", {"command": command}))
    pid_file = root / "child.pid"

    async def child_started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip().isdigit()

    await eventually(child_started, what="the command's child process")
    child = int(pid_file.read_text())
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    async def child_gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return _is_zombie(child)

    await eventually(child_gone, what="the child to be killed")


def _is_zombie(pid: int) -> bool:
    """Killed, waiting for a parent that is gone too (init reaps it in its own time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
