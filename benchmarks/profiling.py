"""Summarising a py-spy `record --format raw --threads` profile of the runtime process.

Each raw line is `thread (TID): NAME;frame;frame;... COUNT`, a frame being
`function (file:line)`. py-spy's idle detection does not see threads that wait inside C
(the event loop in epoll, the SQLite writer's thread or aiosqlite's workers on their queue,
gRPC's poller), so those
samples are recognised here and set apart as waiting; the rest is where the time goes: per
thread, per library (of the innermost frame), and per function, by self and inclusive samples.
"""

from __future__ import annotations

import importlib.util
import linecache
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\)(?::\s*(?P<name>.*))?$")

EVENT_LOOP = "event loop (main thread)"
SQLITE_WORKERS = "aiosqlite worker threads"
SQLITE_WRITER = "SQLite writer thread (BEGIN IMMEDIATE, COMMIT with fsync)"
GRPC_POLLER = "gRPC poller thread"
OTHER_THREADS = "other threads"

# (substring of the innermost frame's file, library), first match wins.
_LIBRARIES = (
    ("agent_runtime/v1/", "generated protobuf code"),
    ("agent_runtime/", "agent_runtime (our code)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("aiosqlite/", "SQLite C calls via aiosqlite (statements, commits, lock waits, fsync)"),
    ("sqlite3/", "sqlite3"),
    ("grpc/", "grpc (python + cython)"),
    ("google/protobuf", "protobuf"),
    ("aiohttp/", "aiohttp (the runtime's model client)"),
    ("multidict/", "multidict (aiohttp)"),
    ("yarl/", "yarl (aiohttp)"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("h11/", "h11"),
    ("anyio/", "anyio"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio event loop machinery"),
    ("selectors.py", "asyncio event loop machinery"),
    ("threading.py", "threading"),
    ("queue.py", "queue"),
    ("concurrent/", "concurrent.futures"),
    ("greenlet", "greenlet (SQLAlchemy async bridge)"),
    ("contextlib.py", "contextlib"),
    ("uuid.py", "uuid"),
    ("datetime", "datetime"),
    ("re/", "re"),
    ("enum.py", "enum"),
    ("typing.py", "typing"),
    ("dataclasses.py", "dataclasses"),
    ("codecs", "codecs"),
    ("encodings/", "codecs"),
    ("<frozen importlib", "imports"),
)


@dataclass
class ProfileReport:
    samples: int = 0
    waiting: Counter[str] = field(default_factory=Counter)
    by_thread: Counter[str] = field(default_factory=Counter)
    by_library: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    inclusive_runtime: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        return self.samples - sum(self.waiting.values())


def _parse_frame(frame: str) -> tuple[str, str, int]:
    found = _FRAME.match(frame)
    if found is None:
        return frame, "", 0
    return found.group("function"), found.group("file"), int(found.group("line") or 0)


@cache
def _source_line(path: str, line: int) -> str:
    """The text of line `line` of a library file named relative to its site-packages."""
    top = path.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ""
    if spec is None or spec.origin is None:
        return ""
    return linecache.getline(str(Path(spec.origin).parent.parent / path), line).strip()


def library_of(path: str) -> str:
    for needle, name in _LIBRARIES:
        if needle in path:
            return name
    return "other" if path else "native / unknown"


def thread_role(name: str) -> str:
    if name == "MainThread":
        return EVENT_LOOP
    if "_connection_worker_thread" in name:
        return SQLITE_WORKERS
    if "sqlite-writer" in name:
        return SQLITE_WRITER
    if "_poll_wrapper" in name:
        return GRPC_POLLER
    return OTHER_THREADS


def _waiting(role: str, function: str, path: str, line: int) -> str | None:
    """Why a sample is a thread waiting rather than working, or None."""
    if path == "selectors.py" and function.endswith("select"):
        return "event loop waiting in epoll"
    if role == GRPC_POLLER and path == "threading.py":
        return "gRPC poller waiting (C)"
    if role == SQLITE_WORKERS and path.startswith("aiosqlite/"):
        text = _source_line(path, line)
        if ".get(" in text:
            return "aiosqlite worker waiting for work"
    pool_worker = path == "concurrent/futures/thread.py" and function == "_worker"
    if pool_worker and ".get(" in _source_line(path, line):
        return "SQLite writer thread waiting for work"
    return None


def summarize_raw(raw: str) -> ProfileReport:
    report = ProfileReport()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        name = ""
        if (thread := _THREAD.match(parts[0])) is not None:
            name = thread.group("name") or ""
            parts = parts[1:]
        frames = [f for f in parts if f and not f.startswith("process ")]
        if not frames:
            continue
        report.samples += count
        role = thread_role(name)
        if role == OTHER_THREADS and any("sqlite_writer.py" in frame for frame in frames):
            role = SQLITE_WRITER  # py-spy may not report the thread's name
        function, path, number = _parse_frame(frames[-1])
        if (why := _waiting(role, function, path, number)) is not None:
            report.waiting[why] += count
            continue
        report.by_thread[role] += count
        report.by_library[library_of(path)] += count
        report.self_time[f"{function} ({path})"] += count
        seen: set[str] = set()
        for frame in frames:
            function, path, _ = _parse_frame(frame)
            key = f"{function} ({path})"
            if key in seen:
                continue
            seen.add(key)
            report.inclusive[key] += count
            if path.startswith("agent_runtime/") and not path.startswith("agent_runtime/v1/"):
                report.inclusive_runtime[key] += count
    return report


def render(report: ProfileReport, *, what: str, top: int = 30) -> str:
    """The summary as text; `what` says what load ran while it was sampled."""
    busy = report.busy or 1

    def table(title: str, counter: Counter[str], limit: int) -> list[str]:
        lines = [title, "-" * len(title)]
        for key, count in counter.most_common(limit):
            lines.append(f"{100 * count / busy:6.1f}%  {count:7d}  {key}")
        return [*lines, ""]

    lines = [
        "py-spy profile of the runtime process (python -m agent_runtime serve)",
        f"{what}; {report.samples} samples, of which {report.busy} busy (percentages are of "
        "the busy ones).",
        "SQLite C calls are sampled as their Python caller: on the writer thread they "
        "include waits for the write lock and for fsync, not only CPU.",
        "",
        "Set apart as waiting: "
        + ", ".join(f"{why} {count}" for why, count in report.waiting.most_common()),
        "",
    ]
    lines += table("Busy samples by thread", report.by_thread, 10)
    lines += table("By library of the innermost frame (self)", report.by_library, 30)
    lines += table("agent_runtime functions, inclusive", report.inclusive_runtime, top)
    lines += table("All functions, inclusive", report.inclusive, top)
    lines += table("All functions, self", report.self_time, top)
    return "\n".join(lines)
