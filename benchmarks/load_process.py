"""Load generators in processes of their own, for the capacity phase.

    python -m benchmarks.load_process      (started by LoadProcesses, driven over stdin/stdout)

Hundreds of paced streams are tens of thousands of chunks a second: one Python process
receiving all of them would be a bottleneck of its own, and its late receive times would
count as the system's delay. So the closed-loop clients are spread over several processes,
each with its own event loop; the bench only starts them, hands each its share of the
sessions, and merges what they measured.

The protocol: one JSON command per line on stdin, one JSON answer per line on stdout.
    {"op": "run", ...RunCommand fields...} -> {"done": "<pickle file of a WindowResult>"}
    {"op": "exit"}                          -> the process ends
A run starts at the wall-clock time `start_ns` given in the command, so every process of a
block starts together; the turns are analysed once the block's load is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from benchmarks.load import (
    GrpcClient,
    OpenAIHttpClient,
    TurnClient,
    WindowResult,
    run_sessions,
)
from benchmarks.processes import die_with_parent

Protocol = Literal["grpc", "openai"]
_REPO = Path(__file__).resolve().parent.parent
# Streams per load-generator process that the capacity phase aims at (at most
# MAX_PROCESSES processes): measured on 2 cores, one process receives a few thousand chunks
# a second before its own event loop starts to delay them.
STREAMS_PER_PROCESS = 100
MAX_PROCESSES = 4


@dataclass(frozen=True)
class RunCommand:
    protocol: Protocol
    address: str  # host:port (gRPC) or the base URL (OpenAI HTTP)
    sessions: list[str]
    model: str
    tokens: int  # per answer, to check each turn got them all
    start_ns: int  # wall-clock time the block starts
    stagger_s: float  # client i of n starts i/n of this after start_ns
    stop_starting_s: float  # no turn starts later than this after start_ns
    window_start_ns: int
    window_end_ns: int
    call_timeout: float
    new_session_every: int
    out: str  # where the pickled WindowResult goes


def processes_for(streams: int, available: int) -> int:
    return max(1, min(available, math.ceil(streams / STREAMS_PER_PROCESS)))


class LoadProcesses:
    """`count` load-generator processes, started once and reused by every block."""

    def __init__(self, count: int, log_dir: Path) -> None:
        self.count = count
        self._log_dir = log_dir
        self._processes: list[asyncio.subprocess.Process] = []
        self._blocks = 0

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    async def __aenter__(self) -> LoadProcesses:
        for index in range(self.count):
            log = _open_log(self._log_dir / f"load-{index}.log")
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.load_process",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    cwd=_REPO,
                    env={k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"},
                    preexec_fn=die_with_parent if sys.platform == "linux" else None,
                )
            finally:
                log.close()  # the child keeps its own descriptor
            self._processes.append(process)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for process in self._processes:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                process.stdin.write(b'{"op": "exit"}\n')
                await process.stdin.drain()
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._processes.clear()

    async def run(self, processes: int, sessions: list[str], template: RunCommand) -> WindowResult:
        """The sessions spread over the first `processes` processes, all run at once."""
        used = self._processes[: max(1, min(processes, len(self._processes)))]
        self._blocks += 1
        commands = []
        for index, _process in enumerate(used):
            out = self._log_dir / f"block-{self._blocks}-{index}.pickle"
            share = sessions[index :: len(used)]
            commands.append(RunCommand(**{**asdict(template), "sessions": share, "out": str(out)}))
        results = await asyncio.gather(
            *(self._one(process, command) for process, command in zip(used, commands, strict=True))
        )
        merged = WindowResult(template.window_start_ns, template.window_end_ns)
        for result in results:
            merged.merge(result)
        return merged

    async def _one(self, process: asyncio.subprocess.Process, command: RunCommand) -> WindowResult:
        assert process.stdin is not None and process.stdout is not None
        if not command.sessions:
            return WindowResult(command.window_start_ns, command.window_end_ns)
        process.stdin.write(json.dumps({"op": "run", **asdict(command)}).encode() + b"\n")
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"load process {process.pid} ended: see load-*.log")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load process {process.pid}: {answer['error']}")
        return _take_result(Path(answer["done"]))


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")  # closed by the caller once the child has it


def _take_result(path: Path) -> WindowResult:
    """A load process's result, read from the file it wrote (then deleted)."""
    try:
        result: WindowResult = pickle.loads(path.read_bytes())  # our own processes' file
    finally:
        path.unlink(missing_ok=True)
    return result


def _give_result(path: Path, result: WindowResult) -> None:
    path.write_bytes(pickle.dumps(result))


# -- the child process ----------------------------------------------------------------------


class _Clients:
    """One client per target, kept for the process's life (the systems alternate)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, int], TurnClient] = {}

    async def get(self, protocol: Protocol, address: str, streams: int) -> TurnClient:
        channels = max(1, min(16, math.ceil(streams / 64)))
        key = (protocol, address, channels if protocol == "grpc" else 0)
        client = self._clients.get(key)
        if client is None:
            if protocol == "grpc":
                client = GrpcClient(address, channels)
            else:
                client = OpenAIHttpClient(address)
            await client.wait_ready()
            self._clients[key] = client
        return client

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self._clients.values()))


async def _run(command: RunCommand, clients: _Clients) -> WindowResult:
    client = await clients.get(command.protocol, command.address, len(command.sessions))
    delay = (command.start_ns - time.time_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    run = await run_sessions(
        client,
        command.sessions,
        1_000_000,  # closed loop: turns follow each other until stop_starting_s
        command.model,
        call_timeout=command.call_timeout,
        max_seconds=command.stop_starting_s,
        new_session_every=command.new_session_every,
        stagger_s=command.stagger_s,
    )
    result = WindowResult(command.window_start_ns, command.window_end_ns)
    result.add(run, command.tokens)
    return result


async def _serve() -> None:
    clients = _Clients()
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            request = json.loads(line)
            if request.pop("op") != "run":
                return
            try:
                command = RunCommand(**request)
                result = await _run(command, clients)
                _give_result(Path(command.out), result)
                answer: dict[str, str] = {"done": command.out}
            except Exception as exc:  # the bench reports it and stops
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await clients.close()


def main() -> int:
    asyncio.run(_serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
