"""The load generator: concurrent turns, each timed chunk by chunk.

A turn is a gRPC StreamMessage call (GrpcClient: the runtime and the floor) or an
OpenAI-style streaming chat completion over HTTP (OpenAIHttpClient: the peer, a proxy).
While a phase runs, a turn only records (receive time, delta text) pairs; the tokens' own
timestamps (see benchmarks.fake_model) are parsed afterwards, so the client does as little
as possible while it is being measured. Times are time.time_ns() (CLOCK_REALTIME), the clock
the fake model stamps tokens with, so model->client delays compare across processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import grpc

from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import agent_runtime_pb2_grpc as rt_grpc
from benchmarks.stats import summarize

_STAMP = re.compile(r"([rt])(\d{16,20})")
_END_TURN = "STOP_REASON_END_TURN"
_NS_PER_MS = 1_000_000
# grpc.aio shares one TCP connection between channels to the same target unless told not to.
_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def model_name(tokens: int, rate: float, ttfb_ms: float = 0.0) -> str:
    """The model field that tells benchmarks.fake_model how to answer."""
    name = f"bench/tokens={tokens}/rate={rate:g}"
    return f"{name}/ttfb={ttfb_ms:g}" if ttfb_ms else name


@dataclass(slots=True)
class TurnRecord:
    session_id: str
    sent_ns: int
    first_chunk_ns: int = 0
    first_delta_ns: int = 0
    end_ns: int = 0
    chunks: int = 0
    deltas: list[tuple[int, str]] = field(default_factory=list)
    stop_reason: str = ""
    error: str = ""
    # The deltas are raw SSE data (JSON chat-completion chunks), read after the phase.
    raw_sse: bool = False


@dataclass(slots=True)
class TurnTimes:
    """One turn, analysed. Durations in milliseconds."""

    ok: bool
    error: str
    chunks: int
    delta_chunks: int
    tokens: int
    ttfc_ms: float
    ttft_ms: float
    e2e_ms: float
    upstream_ms: float  # client sent -> model had read the request
    model_ttfb_ms: float  # model read the request -> model wrote its first token
    downstream_ms: float  # model wrote its first token -> client got it
    added_ms: float  # ttft - model_ttfb: what the server in between adds to the first token
    token_delays_ms: list[float]  # per token: model wrote it -> client got it
    token_received_ns: list[int]  # per token: when the client got it


def analyse(record: TurnRecord, expected_tokens: int) -> TurnTimes:
    received_by_model = 0
    first_token_sent = 0
    tokens = 0
    delays: list[float] = []
    received: list[int] = []
    first_delta_ns = record.first_delta_ns
    deltas = record.deltas
    if record.raw_sse:
        deltas = _sse_contents(deltas)
        first_delta_ns = deltas[0][0] if deltas else 0
    for received_ns, text in deltas:
        for kind, stamp in _STAMP.findall(text):
            value = int(stamp)
            if kind == "r":
                received_by_model = value
                continue
            tokens += 1
            if not first_token_sent:
                first_token_sent = value
            delays.append((received_ns - value) / _NS_PER_MS)
            received.append(received_ns)
    error = record.error
    if not error and record.stop_reason != _END_TURN:
        error = record.stop_reason or "NO_TURN_COMPLETED"
    if not error and tokens != expected_tokens:
        error = "TOKENS_LOST"
    end = record.end_ns or record.sent_ns

    def since(start: int, stop: int) -> float:
        return (stop - start) / _NS_PER_MS if start and stop else float("nan")

    ttft = since(record.sent_ns, first_delta_ns)
    model_ttfb = since(received_by_model, first_token_sent)
    return TurnTimes(
        ok=not error,
        error=error,
        chunks=record.chunks,
        delta_chunks=len(deltas),
        tokens=tokens,
        ttfc_ms=since(record.sent_ns, record.first_chunk_ns),
        ttft_ms=ttft,
        e2e_ms=since(record.sent_ns, end),
        upstream_ms=since(record.sent_ns, received_by_model),
        model_ttfb_ms=model_ttfb,
        downstream_ms=since(first_token_sent, first_delta_ns),
        added_ms=ttft - model_ttfb,
        token_delays_ms=delays,
        token_received_ns=received,
    )


def _sse_contents(reads: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(received, delta content) of the chat-completion chunks in an SSE body read in pieces
    (a line counts as received with the piece that ended it); only those that carry text."""
    contents: list[tuple[int, str]] = []
    pending = ""
    for received_ns, piece in reads:
        *lines, pending = (pending + piece).split("\n")
        for line in lines:
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            text = (choices[0].get("delta") or {}).get("content")
            if text:
                contents.append((received_ns, text))
    return contents


class TurnClient(Protocol):
    async def wait_ready(self, seconds: float = 30.0) -> None: ...

    async def close(self) -> None: ...

    async def turn(
        self, session_id: str, content: str, model: str, *, slot: int, call_timeout: float
    ) -> TurnRecord: ...


class GrpcClient:
    """`channels` separate HTTP/2 connections to one server; calls are spread over them."""

    def __init__(self, address: str, channels: int = 1, *, api_key: str = "") -> None:
        # An API key picks the tenant (the server's AGENT_RUNTIME_API_KEYS); none: development.
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._channels = [
            grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            for _ in range(max(1, channels))
        ]
        self._stubs = [rt_grpc.AgentRuntimeServiceStub(channel) for channel in self._channels]

    async def wait_ready(self, seconds: float = 30.0) -> None:
        async with asyncio.timeout(seconds):
            await asyncio.gather(*(channel.channel_ready() for channel in self._channels))

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))

    async def turn(
        self, session_id: str, content: str, model: str, *, slot: int, call_timeout: float
    ) -> TurnRecord:
        request = rt.StreamMessageRequest(
            session_id=session_id,
            agent="coder",
            model=model,
            user_message=rt.UserMessage(content=content),
        )
        stub: Any = self._stubs[slot % len(self._stubs)]
        record = TurnRecord(session_id, time.time_ns())
        deltas = record.deltas
        try:
            call = stub.StreamMessage(request, timeout=call_timeout, metadata=self._metadata)
            async for chunk in call:
                now = time.time_ns()
                record.chunks += 1
                if not record.first_chunk_ns:
                    record.first_chunk_ns = now
                kind = chunk.WhichOneof("chunk")
                if kind == "assistant_delta":
                    if not record.first_delta_ns:
                        record.first_delta_ns = now
                    deltas.append((now, chunk.assistant_delta.text))
                elif kind == "turn_completed":
                    record.stop_reason = rt.StopReason.Name(chunk.turn_completed.stop_reason)
                    record.end_ns = now
                elif kind == "error":
                    record.error = chunk.error.reason or chunk.error.code or "ERROR_CHUNK"
        except grpc.aio.AioRpcError as exc:
            record.error = f"grpc:{exc.code().name}"
        if not record.end_ns:
            record.end_ns = time.time_ns()
        return record


class OpenAIHttpClient:
    """Streaming chat completions (`POST {base_url}/chat/completions`, "stream": true) on
    one aiohttp session with an unbounded pool. Each network read is kept raw with its
    receive time; the SSE events are parsed after the phase (TurnRecord.raw_sse)."""

    def __init__(self, base_url: str) -> None:
        self._url = f"{base_url.rstrip('/')}/chat/completions"
        self._host, _, port = base_url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
        self._port = int(port)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
        return self._session

    async def wait_ready(self, seconds: float = 30.0) -> None:
        async with asyncio.timeout(seconds):
            while True:
                try:
                    _, writer = await asyncio.open_connection(self._host, self._port)
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                writer.close()
                return

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def turn(
        self, session_id: str, content: str, model: str, *, slot: int, call_timeout: float
    ) -> TurnRecord:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            "user": session_id,
        }
        record = TurnRecord(session_id, time.time_ns(), raw_sse=True)
        deltas = record.deltas
        try:
            async with asyncio.timeout(call_timeout):
                async with self._open().post(self._url, json=body) as response:
                    if response.status != 200:
                        record.error = f"http:{response.status}"
                        await response.read()
                    else:
                        async for data in response.content.iter_any():
                            now = time.time_ns()
                            record.chunks += 1
                            if not record.first_chunk_ns:
                                record.first_chunk_ns = now
                            text = data.decode("utf-8", "replace")
                            deltas.append((now, text))
                            if "data: [DONE]" in text:
                                record.stop_reason = _END_TURN
                                record.end_ns = now
        except TimeoutError:
            record.error = "http:TIMEOUT"
        except (aiohttp.ClientError, OSError) as exc:
            record.error = f"http:{type(exc).__name__}"
        if not record.end_ns:
            record.end_ns = time.time_ns()
        return record


@dataclass(slots=True)
class PhaseRun:
    records: list[TurnRecord]
    wall_s: float
    timed_out: bool


async def run_sessions(
    client: TurnClient,
    sessions: list[str],
    turns: int,
    model: str,
    *,
    call_timeout: float,
    max_seconds: float,
    new_session_every: int = 0,
    stagger_s: float = 0.0,
    content: str = "Summarise the change in one paragraph.",
) -> PhaseRun:
    """One worker per entry of `sessions`; each runs `turns` turns in a row.

    Worker i of n starts i/n x `stagger_s` seconds after the first (0: all at once), so
    that closed-loop clients of a paced model do not all wait for their first byte at once.

    With `new_session_every` = k > 0, a worker moves to a fresh session (its name plus a
    counter) after every k turns, so histories stay short whatever the number of turns;
    with 0 it stays on its session. Bounded twice: no new turn starts after `max_seconds`,
    and the phase is cancelled at `max_seconds + call_timeout` (a cancelled turn counts as
    an error, PHASE_TIMEOUT).
    """
    records: list[TurnRecord] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop_starting = start + max_seconds

    async def worker(slot: int, base: str) -> None:
        if stagger_s:
            await asyncio.sleep(stagger_s * slot / len(sessions))
        for number in range(turns):
            if loop.time() >= stop_starting:
                return
            session_id = f"{base}.{number // new_session_every}" if new_session_every else base
            index = len(records)
            records.append(TurnRecord(session_id, time.time_ns(), error="PHASE_TIMEOUT"))
            done = await client.turn(
                session_id, content, model, slot=slot, call_timeout=call_timeout
            )
            records[index] = done

    tasks = [loop.create_task(worker(slot, session_id)) for slot, session_id in enumerate(sessions)]
    timed_out = False
    try:
        async with asyncio.timeout(max_seconds + call_timeout):
            await asyncio.gather(*tasks)
    except TimeoutError:
        timed_out = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return PhaseRun(records, loop.time() - start, timed_out)


def summarize_phase(run: PhaseRun, expected_tokens: int) -> dict[str, Any]:
    """Throughput, latency percentiles, delays and errors of one phase, as plain data."""
    times = [analyse(record, expected_tokens) for record in run.records]
    ok = [t for t in times if t.ok]
    errors = Counter(t.error for t in times if not t.ok)
    wall = run.wall_s
    delays = [d for t in ok for d in t.token_delays_ms]
    return {
        "turns": len(times),
        "ok_turns": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common()),
        "timed_out": run.timed_out,
        "wall_s": round(wall, 3),
        "turns_per_s": len(ok) / wall if wall > 0 else float("nan"),
        "delta_chunks_per_s": sum(t.delta_chunks for t in ok) / wall if wall > 0 else float("nan"),
        "chunks_per_s": sum(t.chunks for t in ok) / wall if wall > 0 else float("nan"),
        "chunks_per_turn": sum(t.chunks for t in ok) / len(ok) if ok else float("nan"),
        "ttfc_ms": summarize([t.ttfc_ms for t in ok]),
        "ttft_ms": summarize([t.ttft_ms for t in ok]),
        "e2e_ms": summarize([t.e2e_ms for t in ok]),
        "added_ms": summarize([t.added_ms for t in ok]),
        "upstream_ms": summarize([t.upstream_ms for t in ok]),
        "model_ttfb_ms": summarize([t.model_ttfb_ms for t in ok]),
        "downstream_ms": summarize([t.downstream_ms for t in ok]),
        "token_delay_ms": summarize(delays),
    }


@dataclass(slots=True)
class WindowResult:
    """A closed-loop block seen through its steady window [start_ns, end_ns): the turns sent
    in it (for time to first token), the tokens received in it (for token delays and for
    what the CPU spent in the window bought), the errors of every turn of the block."""

    start_ns: int
    end_ns: int
    sent_in_window: list[TurnTimes] = field(default_factory=list)
    token_delays_ms: list[float] = field(default_factory=list)  # tokens received in it
    errors: Counter[str] = field(default_factory=Counter)
    turns: int = 0
    ok_turns: int = 0
    sessions: set[str] = field(default_factory=set)
    spans: list[tuple[int, int]] = field(default_factory=list)  # (sent, ended) of each turn

    def add(self, run: PhaseRun, expected_tokens: int) -> None:
        for record in run.records:
            times = analyse(record, expected_tokens)
            self.turns += 1
            self.sessions.add(record.session_id)
            self.spans.append((record.sent_ns, record.end_ns or record.sent_ns))
            if not times.ok:
                self.errors[times.error] += 1
                continue
            self.ok_turns += 1
            if self.start_ns <= record.sent_ns < self.end_ns:
                self.sent_in_window.append(times)
            for delay, received in zip(times.token_delays_ms, times.token_received_ns, strict=True):
                if self.start_ns <= received < self.end_ns:
                    self.token_delays_ms.append(delay)
            times.token_delays_ms = []  # kept above where it counts; not carried twice
            times.token_received_ns = []

    def merge(self, other: WindowResult) -> None:
        self.sent_in_window += other.sent_in_window
        self.token_delays_ms += other.token_delays_ms
        self.errors.update(other.errors)
        self.turns += other.turns
        self.ok_turns += other.ok_turns
        self.sessions |= other.sessions
        self.spans += other.spans

    def summary(self) -> dict[str, Any]:
        sent = self.sent_in_window
        window_s = (self.end_ns - self.start_ns) / 1e9
        tokens = len(self.token_delays_ms)
        return {
            "turns": self.turns,
            "ok_turns": self.ok_turns,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors.most_common()),
            "sessions": len(self.sessions),
            "window_s": round(window_s, 3),
            "tokens_in_window": tokens,
            "tokens_per_s": tokens / window_s if window_s > 0 else float("nan"),
            "turns_sent_in_window": len(sent),
            "delta_chunks_per_token": (
                sum(t.delta_chunks for t in sent) / sum(t.tokens for t in sent)
                if sent
                else float("nan")
            ),
            "token_delay_ms": summarize(self.token_delays_ms),
            "added_ms": summarize([t.added_ms for t in sent]),
            "ttft_ms": summarize([t.ttft_ms for t in sent]),
            "model_ttfb_ms": summarize([t.model_ttfb_ms for t in sent]),
            "e2e_ms": summarize([t.e2e_ms for t in sent]),
            "peak_open_calls": peak_overlap(self.spans),
        }


def peak_overlap(spans: list[tuple[int, int]]) -> int:
    """The most (start, end) spans open at once."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
