"""The file and command tools, run by the terminal client strictly inside one directory.

Every path argument is resolved (symlinks included) and must stay inside the workspace;
one that escapes is refused, and the refusal goes back to the model as a tool error.
execute_command runs its shell command with the working directory inside the workspace;
what the command itself touches is the human's call when approving it.

The model's arguments are untrusted: whatever a call leads to becomes a tool error for the
model, never a crash of the client. No tool can freeze it either: the file tools run off the
event loop, open only regular files (a FIFO would block) and read a bounded amount; the search
runs in a child process with a time limit; Ctrl-C (a cancel) stops any of them.
"""

from __future__ import annotations

import asyncio
import codecs
import fnmatch
import io
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runtime.terminal import processes
from agent_runtime.terminal.clipped import MAX_RESULT_CHARS, Clipped, truncated
from agent_runtime.terminal.search import SearchFailed, SearchRequest, search
from agent_runtime.terminal.tool_arguments import ToolRefused, bool_arg, int_arg, text_arg
from agent_runtime.terminal.tree import Stopped, open_regular, real_path, walk

MAX_LISTED_ENTRIES = 1_000
# list_files stops after looking at this many entries (a huge tree takes too long to walk).
MAX_WALKED_ENTRIES = 200_000
# read_file stops reading after this many characters (a huge file, or one with no newline).
MAX_READ_CHARS = 50_000_000
READ_PIECE_CHARS = 64 * 1024
MAX_SEARCH_FILE_BYTES = 1_000_000
DEFAULT_SEARCH_RESULTS = 100
MAX_SEARCH_RESULTS = 1_000
DEFAULT_SEARCH_TIME_LIMIT = 30.0
DEFAULT_COMMAND_TIMEOUT = 60
MAX_COMMAND_TIMEOUT = 600
COMMAND_READ_BYTES = 64 * 1024

# The catalogue tools that need a workspace: files and commands.
WORKSPACE_TOOLS = frozenset(
    {
        "read_file",
        "write_file",
        "list_files",
        "create_directory",
        "delete_file",
        "move_file",
        "search_in_code",
        "execute_command",
    }
)

Tool = Callable[[dict[str, Any]], Awaitable[str]]
# A tool that runs in a thread; the event is set when the caller gave up (Ctrl-C), and the
# tool's long loops check it.
BlockingTool = Callable[[dict[str, Any], threading.Event], str]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    content: str
    is_error: bool = False


class Workspace:
    def __init__(
        self,
        root: Path,
        *,
        command_timeout: int = DEFAULT_COMMAND_TIMEOUT,
        search_time_limit: float = DEFAULT_SEARCH_TIME_LIMIT,
    ) -> None:
        self.root = root.resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        self._command_timeout = command_timeout
        self._search_time_limit = search_time_limit
        self._tools: dict[str, Tool] = {
            "read_file": _off_loop(self._read_file),
            "write_file": _off_loop(self._write_file),
            "list_files": _off_loop(self._list_files),
            "create_directory": _off_loop(self._create_directory),
            "delete_file": _off_loop(self._delete_file),
            "move_file": _off_loop(self._move_file),
            "search_in_code": self._search_in_code,
            "execute_command": self._execute_command,
        }
        assert set(self._tools) == WORKSPACE_TOOLS

    async def run(self, tool_name: str, arguments: dict[str, Any]) -> ToolOutcome:
        """The tool's result, or its failure as an error result; cancelling stops the tool."""
        tool = self._tools.get(tool_name)
        if tool is None:
            return ToolOutcome(f"unknown tool {tool_name!r}", is_error=True)
        try:
            return ToolOutcome(_sendable(truncated(await tool(arguments))))
        except ToolRefused as refused:
            failure = str(refused)
        except UnicodeDecodeError as exc:
            failure = f"not a text file in that encoding: {exc.reason}"
        except OSError as exc:
            failure = f"{exc.strerror or exc}: {self._named(exc.filename)}"
        except Exception as exc:  # whatever the model's arguments lead to, the client goes on
            failure = f"{tool_name} failed: {type(exc).__name__}: {exc}"
        return ToolOutcome(_sendable(truncated(failure)), is_error=True)

    def resolve(self, path: str) -> Path:
        """The real path for a path argument (relative to the workspace, or absolute inside
        it); ToolRefused when it leads outside, through `..` or a symlink alike."""
        if not path or "\0" in path:
            raise ToolRefused(f"invalid path {path!r}")
        real = real_path(self.root / path)
        if not real.is_relative_to(self.root):
            raise ToolRefused(f"refused: {path} is outside the workspace")
        return real

    def _named(self, filename: object) -> str:
        path = Path(str(filename or ""))
        return self.shown(path) if path.is_relative_to(self.root) else str(filename or "")

    def shown(self, path: Path) -> str:
        """A path as the model should see it: relative to the workspace."""
        relative = path.relative_to(self.root).as_posix()
        return relative if relative != "." else "."

    # -- the tools (the blocking ones run in a thread: see _off_loop) ------------------

    def _read_file(self, args: dict[str, Any], stop: threading.Event) -> str:
        path = self.resolve(text_arg(args, "path"))
        encoding = text_arg(args, "encoding", "utf-8")
        start = int_arg(args, "start_line", 1)
        end = int_arg(args, "end_line", sys.maxsize)
        if start < 1 or end < start - 1:
            raise ToolRefused(f"bad line range {start}..{end}")
        selected = Clipped()
        number, read = 1, 0  # the line being read, the characters read so far
        with _text_file(path, encoding) as file:
            while number <= end:
                if stop.is_set():
                    raise Stopped
                piece = file.readline(READ_PIECE_CHARS)  # a whole line, or a piece of a long one
                if not piece:
                    break
                if number >= start:
                    selected.add(piece)
                number += piece.endswith("\n")
                read += len(piece)
                if read >= MAX_READ_CHARS and number <= end and file.read(1):
                    selected.add(
                        f"\n[... stopped reading at line {number}, after {MAX_READ_CHARS} "
                        "characters: ask for fewer lines with start_line and end_line]"
                    )
                    break
        return selected.text()

    def _write_file(self, args: dict[str, Any], stop: threading.Event) -> str:
        path = self.resolve(text_arg(args, "path"))
        content = text_arg(args, "content")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8", closefd=True) as file:
            file.write(content)
        return f"wrote {len(content.encode())} bytes to {self.shown(path)}"

    def _list_files(self, args: dict[str, Any], stop: threading.Event) -> str:
        top = self.resolve(text_arg(args, "path", "."))
        if not top.is_dir():
            raise ToolRefused(f"not a directory: {self.shown(top)}")
        pattern = text_arg(args, "pattern", "*")
        recursive = bool_arg(args, "recursive", False)
        entries = []
        walked = walk(self.root, top, recursive=recursive, all_dirs=True, stop=stop)
        for looked_at, entry in enumerate(walked, 1):
            if looked_at > MAX_WALKED_ENTRIES:
                entries.append(f"[... stopped after looking at {MAX_WALKED_ENTRIES} entries]")
                break
            if fnmatch.fnmatch(entry.name, pattern):
                entries.append(self.shown(entry) + ("/" if entry.is_dir() else ""))
                if len(entries) == MAX_LISTED_ENTRIES:
                    entries.append(f"[... stopped after {MAX_LISTED_ENTRIES} entries]")
                    break
        return "\n".join(entries) if entries else "(no entries)"

    def _create_directory(self, args: dict[str, Any], stop: threading.Event) -> str:
        path = self.resolve(text_arg(args, "path"))
        path.mkdir(parents=True, exist_ok=True)
        return f"created directory {self.shown(path)}"

    def _delete_file(self, args: dict[str, Any], stop: threading.Event) -> str:
        path = self.resolve(text_arg(args, "path"))
        if path.is_dir():
            raise ToolRefused(f"{self.shown(path)} is a directory; delete_file deletes files")
        path.unlink()
        return f"deleted {self.shown(path)}"

    def _move_file(self, args: dict[str, Any], stop: threading.Event) -> str:
        source = self.resolve(text_arg(args, "source"))
        destination = self.resolve(text_arg(args, "destination"))
        if not source.exists():
            raise ToolRefused(f"no such file: {self.shown(source)}")
        if destination.exists():
            raise ToolRefused(f"{self.shown(destination)} exists already")
        destination.parent.mkdir(parents=True, exist_ok=True)
        source.rename(destination)
        return f"moved {self.shown(source)} to {self.shown(destination)}"

    async def _search_in_code(self, args: dict[str, Any]) -> str:
        query = text_arg(args, "query")
        top = self.resolve(text_arg(args, "path", "."))
        flags = 0 if bool_arg(args, "case_sensitive", False) else re.IGNORECASE
        pattern = query if bool_arg(args, "regex", False) else re.escape(query)
        try:
            re.compile(pattern, flags)  # here, to say what is wrong with it
        except (re.error, OverflowError, RecursionError) as exc:
            raise ToolRefused(f"invalid regular expression: {exc}") from None
        limit = int_arg(args, "max_results", DEFAULT_SEARCH_RESULTS)
        if not 1 <= limit <= MAX_SEARCH_RESULTS:
            raise ToolRefused(f"argument 'max_results' must be 1 to {MAX_SEARCH_RESULTS}")
        request = SearchRequest(
            root=str(self.root),
            top=str(top),
            pattern=pattern,
            flags=flags,
            file_pattern=text_arg(args, "file_pattern", "*"),
            limit=limit,
            max_file_bytes=MAX_SEARCH_FILE_BYTES,
        )
        try:
            searched = await search(request, time_limit=self._search_time_limit)
        except SearchFailed as failed:
            raise ToolRefused(f"the search failed: {failed}") from None
        found = "\n".join(searched.matches)
        if not searched.finished:
            raise ToolRefused(
                f"search stopped after {self._search_time_limit:g} s (a regular expression "
                "that backtracks too much, or too much to search): narrow it down"
                + (f"; found so far:\n{found}" if found else "")
            )
        if len(searched.matches) >= limit:
            found += f"\n[... stopped after {limit} matches]"
        return found or "no matches"

    async def _execute_command(self, args: dict[str, Any]) -> str:
        command = text_arg(args, "command")
        cwd = self.resolve(text_arg(args, "cwd", "."))
        timeout = min(int_arg(args, "timeout", self._command_timeout), MAX_COMMAND_TIMEOUT)
        if timeout < 1:
            raise ToolRefused("argument 'timeout' must be at least 1 (seconds)")
        process = await processes.started(
            asyncio.create_subprocess_shell(
                command,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout stops its children too
            )
        )
        assert process.stdout is not None
        output = Clipped(MAX_RESULT_CHARS - 100)  # room for the exit code or timeout line
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            async with asyncio.timeout(timeout):
                while chunk := await process.stdout.read(COMMAND_READ_BYTES):
                    output.add(decoder.decode(chunk))  # kept bounded: it may print for ever
                await process.wait()
        except TimeoutError:
            output.add(decoder.decode(b"", final=True))
            printed = output.text()
            raise ToolRefused(
                f"timed out after {timeout} s: {truncated(command, 100)}"
                + (f"\n{printed}" if printed else "")
            ) from None
        finally:
            if process.returncode is None:  # out of time or cancelled (Ctrl-C)
                await processes.stop(process)
        output.add(decoder.decode(b"", final=True))
        if process.returncode:
            raise ToolRefused(f"exit code {process.returncode}\n{output.text()}")
        return f"exit code 0\n{output.text()}"


def _off_loop(tool: BlockingTool) -> Tool:
    """`tool` run in a thread: the event loop keeps streaming and answering Ctrl-C. Cancelled,
    the caller returns at once and the thread ends at the tool's next check of `stop`."""

    async def run(arguments: dict[str, Any]) -> str:
        stop = threading.Event()
        try:
            return await asyncio.to_thread(tool, arguments, stop)
        finally:
            stop.set()

    return run


def _text_file(path: Path, encoding: str) -> io.TextIOWrapper:
    """The regular file at `path`, opened to read as text in `encoding`."""
    try:
        io.TextIOWrapper(io.BytesIO(), encoding=encoding)  # also refuses bytes-only codecs
    except LookupError:
        raise ToolRefused(f"unknown encoding {encoding!r}") from None
    return open(open_regular(path), encoding=encoding, closefd=True)


def _sendable(text: str) -> str:
    """`text` as valid UTF-8, which the wire requires: a file name that is not UTF-8 comes
    from the file system as lone surrogates, which are shown as escapes instead."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
