"""The file and command tools, run by the terminal client strictly inside one directory.

Every path argument is resolved (symlinks included) and must stay inside the workspace;
one that escapes is refused, and the refusal goes back to the model as a tool error.
execute_command runs its shell command with the working directory inside the workspace;
what the command itself touches is the human's call when approving it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_RESULT_CHARS = 20_000
MAX_LISTED_ENTRIES = 1_000
MAX_SEARCH_FILE_BYTES = 1_000_000
DEFAULT_SEARCH_RESULTS = 100
DEFAULT_COMMAND_TIMEOUT = 60
MAX_COMMAND_TIMEOUT = 600
# Not searched: version-control internals and installed dependencies.
SKIPPED_DIRECTORIES = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".mypy_cache"}
)


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


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    content: str
    is_error: bool = False


class ToolRefused(Exception):
    """The call cannot run as asked; the message is what the model is told."""


def truncated(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """At most `limit` characters: the head and the tail, saying how much was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut ...]\n{text[-half:]}"


class Workspace:
    def __init__(self, root: Path, *, command_timeout: int = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.root = root.resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        self._command_timeout = command_timeout
        self._tools: dict[str, Callable[[dict[str, Any]], Awaitable[str]]] = {
            "read_file": self._read_file,
            "write_file": self._write_file,
            "list_files": self._list_files,
            "create_directory": self._create_directory,
            "delete_file": self._delete_file,
            "move_file": self._move_file,
            "search_in_code": self._search_in_code,
            "execute_command": self._execute_command,
        }
        assert set(self._tools) == WORKSPACE_TOOLS

    async def run(self, tool_name: str, arguments: dict[str, Any]) -> ToolOutcome:
        tool = self._tools.get(tool_name)
        if tool is None:
            return ToolOutcome(f"unknown tool {tool_name!r}", is_error=True)
        try:
            return ToolOutcome(truncated(await tool(arguments)))
        except ToolRefused as refused:
            return ToolOutcome(str(refused), is_error=True)
        except UnicodeDecodeError as exc:
            return ToolOutcome(f"not a text file in that encoding: {exc.reason}", is_error=True)
        except OSError as exc:
            return ToolOutcome(f"{exc.strerror or exc}: {self._named(exc.filename)}", is_error=True)

    def resolve(self, path: str) -> Path:
        """The real path for a path argument (relative to the workspace, or absolute inside
        it); ToolRefused when it leads outside, through `..` or a symlink alike."""
        if not path or "\0" in path:
            raise ToolRefused(f"invalid path {path!r}")
        real = (self.root / path).resolve()
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

    # -- the tools ---------------------------------------------------------------------

    async def _read_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(_text(args, "path"))
        lines = path.read_text(encoding=_text(args, "encoding", "utf-8")).splitlines(True)
        start = _number(args, "start_line", 1)
        end = _number(args, "end_line", len(lines))
        if start < 1 or end < start - 1:
            raise ToolRefused(f"bad line range {start}..{end}")
        return "".join(lines[start - 1 : end])

    async def _write_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(_text(args, "path"))
        content = _text(args, "content")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return f"wrote {len(content.encode())} bytes to {self.shown(path)}"

    async def _list_files(self, args: dict[str, Any]) -> str:
        top = self.resolve(_text(args, "path", "."))
        if not top.is_dir():
            raise ToolRefused(f"not a directory: {self.shown(top)}")
        pattern = _text(args, "pattern", "*")
        entries = []
        for entry in self._walk(top, recursive=_flag(args, "recursive", False), all_dirs=True):
            if fnmatch.fnmatch(entry.name, pattern):
                entries.append(self.shown(entry) + ("/" if entry.is_dir() else ""))
                if len(entries) == MAX_LISTED_ENTRIES:
                    entries.append(f"[... stopped after {MAX_LISTED_ENTRIES} entries]")
                    break
        return "\n".join(entries) if entries else "(no entries)"

    async def _create_directory(self, args: dict[str, Any]) -> str:
        path = self.resolve(_text(args, "path"))
        path.mkdir(parents=True, exist_ok=True)
        return f"created directory {self.shown(path)}"

    async def _delete_file(self, args: dict[str, Any]) -> str:
        path = self.resolve(_text(args, "path"))
        if path.is_dir():
            raise ToolRefused(f"{self.shown(path)} is a directory; delete_file deletes files")
        path.unlink()
        return f"deleted {self.shown(path)}"

    async def _move_file(self, args: dict[str, Any]) -> str:
        source = self.resolve(_text(args, "source"))
        destination = self.resolve(_text(args, "destination"))
        if not source.exists():
            raise ToolRefused(f"no such file: {self.shown(source)}")
        if destination.exists():
            raise ToolRefused(f"{self.shown(destination)} exists already")
        destination.parent.mkdir(parents=True, exist_ok=True)
        source.rename(destination)
        return f"moved {self.shown(source)} to {self.shown(destination)}"

    async def _search_in_code(self, args: dict[str, Any]) -> str:
        query = _text(args, "query")
        top = self.resolve(_text(args, "path", "."))
        flags = 0 if _flag(args, "case_sensitive", False) else re.IGNORECASE
        try:
            needle = re.compile(query if _flag(args, "regex", False) else re.escape(query), flags)
        except re.error as exc:
            raise ToolRefused(f"invalid regular expression: {exc}") from None
        pattern = _text(args, "file_pattern", "*")
        limit = _number(args, "max_results", DEFAULT_SEARCH_RESULTS)
        files = [top] if top.is_file() else self._walk(top, recursive=True, all_dirs=False)
        found: list[str] = []
        for file in files:
            if not fnmatch.fnmatch(file.name, pattern) or not _is_searchable(file):
                continue
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable: not code to search
            for number, line in enumerate(text.splitlines(), 1):
                if needle.search(line):
                    found.append(f"{self.shown(file)}:{number}: {line.strip()[:300]}")
                    if len(found) >= limit:
                        return "\n".join([*found, f"[... stopped after {limit} matches]"])
        return "\n".join(found) if found else "no matches"

    async def _execute_command(self, args: dict[str, Any]) -> str:
        command = _text(args, "command")
        cwd = self.resolve(_text(args, "cwd", "."))
        timeout = min(_number(args, "timeout", self._command_timeout), MAX_COMMAND_TIMEOUT)
        if timeout < 1:
            raise ToolRefused("argument 'timeout' must be at least 1 (seconds)")
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_shell(
                command,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout stops its children too
            )
        )
        try:
            process = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # The shell may already run (and have started children) when the cancel lands;
            # asyncio would kill only the shell itself, so finish the spawn and stop the group.
            process = await spawn
            _kill_group(process.pid)
            await process.wait()
            raise
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            raise ToolRefused(f"timed out after {timeout} s: {command}") from None
        except asyncio.CancelledError:
            _kill_group(process.pid)
            await process.wait()
            raise
        text = output.decode("utf-8", "replace")
        if process.returncode:
            raise ToolRefused(truncated(f"exit code {process.returncode}\n{text}"))
        return f"exit code 0\n{text}"

    def _walk(self, top: Path, *, recursive: bool, all_dirs: bool) -> Iterator[Path]:
        """Entries under `top` that are inside the workspace (a symlink out is left out);
        directories too when `all_dirs`. Symlinked directories are not descended into."""
        for directory, dirs, files in os.walk(top):
            dirs.sort()
            if not all_dirs:
                dirs[:] = [d for d in dirs if d not in SKIPPED_DIRECTORIES]
            here = Path(directory)
            names = sorted(dirs + files) if all_dirs else sorted(files)
            for name in names:
                entry = here / name
                if entry.resolve().is_relative_to(self.root):
                    yield entry
            if not recursive:
                return


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _is_searchable(file: Path) -> bool:
    try:
        return file.stat().st_size <= MAX_SEARCH_FILE_BYTES
    except OSError:
        return False


_MISSING: Any = object()


def _text(args: dict[str, Any], name: str, default: str = _MISSING) -> str:
    value = args.get(name, default)
    if value is _MISSING:
        raise ToolRefused(f"missing argument {name!r}")
    if not isinstance(value, str):
        raise ToolRefused(f"argument {name!r} must be a string")
    return value


def _number(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolRefused(f"argument {name!r} must be an integer")
    return value


def _flag(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise ToolRefused(f"argument {name!r} must be true or false")
    return value
