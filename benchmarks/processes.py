"""Child processes (model, floor, runtime) and what /proc says about them.

Every child gets PR_SET_PDEATHSIG (killed if the bench dies, even by SIGKILL) and is stopped
by ProcessGroup on the way out, on success, error or Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# Children run from the repository root, so `python -m benchmarks.*` finds this package.
REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class StartupError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5.0)


class ProcessGroup:
    """Starts children with their stderr in `log_dir`; stops all of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        startup_seconds: float = 60.0,
        ready: re.Pattern[str] = _LISTENING,
    ) -> Child:
        """Start `argv` and wait for its `listening on HOST:PORT` line (or what `ready`
        matches, the port as its first group)."""
        log_path = self._log_dir / f"{name}.log"
        child = Child(name, _spawn(argv, env, log_path, cwd or REPO), log_path)
        process = child.process
        self._children.append(child)
        deadline = time.monotonic() + startup_seconds
        while time.monotonic() < deadline:
            if (found := ready.search(_read(log_path))) is not None:
                child.port = int(found.group(1))
                return child
            if process.poll() is not None:
                raise StartupError(f"{name} exited early:\n{child.log_tail()}")
            await asyncio.sleep(0.05)
        child.stop()
        raise StartupError(f"{name} did not start in {startup_seconds:.0f}s:\n{child.log_tail()}")

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self._children):
            with contextlib.suppress(Exception):
                child.stop()
        self._children.clear()

    async def __aenter__(self) -> ProcessGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _spawn(
    argv: Sequence[str], env: Mapping[str, str] | None, log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={
                **{k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"},
                **(env or {}),
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU time so far of a process (with its threads that have ended) or of one of its
    threads; 0.0 once gone. From the kernel's CPU-time clock of the process or thread, to
    the nanosecond: /proc's figures count in clock ticks (10 ms), more than a small server
    spends in a short window. /proc where that clock cannot be read."""
    try:
        return time.clock_gettime_ns(_cpu_clock(pid if tid is None else tid, tid is not None)) / 1e9
    except (OSError, AttributeError):  # gone, or not Linux
        pass
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime field 14, stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _cpu_clock(task: int, thread: bool) -> int:
    """The clock id of a process's (or a thread's) CPU time, made as glibc's
    clock_getcpuclockid and pthread_getcpuclockid make it (Linux ABI): the id inverted and
    shifted by 3, CPUCLOCK_SCHED (2), and 4 for a single thread."""
    return (~task << 3) | (6 if thread else 2)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now (a server that runs its work in child processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue += children.get(current, [])
    return tree


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident set since start), in KiB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    values = [int(value) for value in fields[:8]]
    return (sum(values) - values[3] - values[4]) / _CLOCK_TICKS


class CpuMeter:
    """CPU seconds used by some processes (and this one) between start() and stop().

    For each process, `<name>_main_thread` is its main thread's share: for an asyncio server
    that is the event loop (the rest is worker threads, e.g. the SQLite writer's, and gRPC's
    poller).
    """

    def __init__(self, pids: Mapping[str, int | Sequence[int]]) -> None:
        # A name may stand for several processes (a server and its workers): summed.
        self._pids = {name: [p] if isinstance(p, int) else list(p) for name, p in pids.items()}
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def start(self) -> None:
        self._start = self._sample()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        """CPU seconds per process; `others` is what the rest of the machine used meanwhile
        (a busy neighbour makes a run less trustworthy)."""
        end = self._sample()
        used = {name: round(end[name] - self._start.get(name, 0.0), 3) for name in end}
        ours = sum(used[name] for name in (*self._pids, "client"))
        used["others"] = round(max(0.0, used.pop("machine") - ours), 3)
        used["wall"] = round(time.monotonic() - self._wall, 3)
        return used

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self._pids.items()}
        for name, pids in self._pids.items():
            sample[f"{name}_main_thread"] = cpu_seconds(pids[0], pids[0])
        times = os.times()
        sample["client"] = times.user + times.system
        sample["machine"] = machine_busy_seconds()
        return sample


class MemorySampler:
    """Samples a process's VmRSS every `interval` seconds while running (bounded count)."""

    def __init__(self, pid: int, interval: float = 0.1, max_samples: int = 20_000) -> None:
        self._pid = pid
        self._interval = interval
        self._max = max_samples
        self.samples: list[tuple[float, int]] = []  # (seconds since start, KiB)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        start = time.monotonic()
        while len(self.samples) < self._max:
            self.samples.append((time.monotonic() - start, memory_kib(self._pid)["VmRSS"]))
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# x86_64 syscall numbers of the waits worth naming; elsewhere numbers are shown as they are.
_SYSCALLS_X86_64 = {
    "0": "read",
    "1": "write",
    "7": "poll",
    "18": "pwrite64",
    "35": "nanosleep",
    "74": "fsync",
    "75": "fdatasync",
    "202": "futex",
    "230": "clock_nanosleep",
    "232": "epoll_wait",
    "271": "ppoll",
    "281": "epoll_pwait",
}


def thread_states(pid: int) -> list[tuple[bool, str]]:
    """(is the main thread, what it is doing) for each thread of `pid`: "running" when the
    scheduler has it on a CPU (or ready), else the system call it is blocked in."""
    names = _SYSCALLS_X86_64 if platform.machine() == "x86_64" else {}
    states: list[tuple[bool, str]] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return states
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/task/{tid}/syscall") as syscall:
                number = syscall.read().split()[0]
        except (OSError, IndexError):
            continue
        doing = "running" if state == "R" or number == "running" else names.get(number, number)
        states.append((int(tid) == pid, doing))
    return states


class ThreadStateSampler:
    """Samples what every thread of a process is doing, `hz` times a second (bounded)."""

    def __init__(self, pid: int, hz: float = 100.0, max_samples: int = 100_000) -> None:
        self._pid = pid
        self._interval = 1.0 / hz
        self._max = max_samples
        self.samples = 0
        self.counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while self.samples < self._max:
            for is_main, doing in await asyncio.to_thread(thread_states, self._pid):
                key = f"{'main thread' if is_main else 'other threads'}: {doing}"
                self.counts[key] = self.counts.get(key, 0) + 1
            self.samples += 1
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, float]:
        """Average number of threads in each state."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        samples = self.samples or 1
        ordered = sorted(self.counts.items(), key=lambda item: -item[1])
        return {key: round(count / samples, 3) for key, count in ordered}
