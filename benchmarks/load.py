"""The gRPC load generator: concurrent StreamMessage turns, each timed chunk by chunk.

While a phase runs, a turn only records (receive time, delta text) pairs; the tokens' own
timestamps (see benchmarks.fake_model) are parsed afterwards, so the client does as little
as possible while it is being measured. Times are time.time_ns() (CLOCK_REALTIME), the clock
the fake model stamps tokens with, so model->client delays compare across processes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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


def model_name(tokens: int, rate: float) -> str:
    """The model field that tells benchmarks.fake_model how to answer."""
    return f"bench/tokens={tokens}/rate={rate:g}"


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


def analyse(record: TurnRecord, expected_tokens: int) -> TurnTimes:
    received_by_model = 0
    first_token_sent = 0
    tokens = 0
    delays: list[float] = []
    for received_ns, text in record.deltas:
        for kind, stamp in _STAMP.findall(text):
            value = int(stamp)
            if kind == "r":
                received_by_model = value
                continue
            tokens += 1
            if not first_token_sent:
                first_token_sent = value
            delays.append((received_ns - value) / _NS_PER_MS)
    error = record.error
    if not error and record.stop_reason != _END_TURN:
        error = record.stop_reason or "NO_TURN_COMPLETED"
    if not error and tokens != expected_tokens:
        error = "TOKENS_LOST"
    end = record.end_ns or record.sent_ns

    def since(start: int, stop: int) -> float:
        return (stop - start) / _NS_PER_MS if start and stop else float("nan")

    ttft = since(record.sent_ns, record.first_delta_ns)
    model_ttfb = since(received_by_model, first_token_sent)
    return TurnTimes(
        ok=not error,
        error=error,
        chunks=record.chunks,
        delta_chunks=len(record.deltas),
        tokens=tokens,
        ttfc_ms=since(record.sent_ns, record.first_chunk_ns),
        ttft_ms=ttft,
        e2e_ms=since(record.sent_ns, end),
        upstream_ms=since(record.sent_ns, received_by_model),
        model_ttfb_ms=model_ttfb,
        downstream_ms=since(first_token_sent, record.first_delta_ns),
        added_ms=ttft - model_ttfb,
        token_delays_ms=delays,
    )


class Client:
    """`channels` separate HTTP/2 connections to one server; calls are spread over them."""

    def __init__(self, address: str, channels: int = 1) -> None:
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
            call = stub.StreamMessage(request, timeout=call_timeout)
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


@dataclass(slots=True)
class PhaseRun:
    records: list[TurnRecord]
    wall_s: float
    timed_out: bool


async def run_sessions(
    client: Client,
    sessions: list[str],
    turns: int,
    model: str,
    *,
    call_timeout: float,
    max_seconds: float,
    new_session_every: int = 0,
    content: str = "Summarise the change in one paragraph.",
) -> PhaseRun:
    """One worker per entry of `sessions`, all at once; each runs `turns` turns in a row.

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
