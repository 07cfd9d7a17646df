"""A zero-latency OpenAI-compatible chat-completions endpoint for the benchmark.

    python -m benchmarks.fake_model [--listen 127.0.0.1:0] [--tokens 50] [--rate 0] [--ttfb 0]

Prints `listening on 127.0.0.1:PORT` on stderr once it accepts connections.

`POST /v1/chat/completions` always streams (chunked SSE, HTTP/1.1 keep-alive) an answer of
`tokens` tokens at `rate` tokens per second (0: as fast as the socket takes them), the first
one `ttfb` milliseconds after the request was read (a model's time to first token). A
request may override all three through its `model` field, e.g.
"bench/tokens=200/rate=50/ttfb=300", so one process serves every phase; the runtime, the
floor and the peer all pass the model name through.

A paced answer costs one timer callback and one socket write per token, no task: the fake
model must stay a small part of the machine while it paces thousands of streams. Each
token's lateness (written after its due time because the process was busy) is counted in
/stats, so a report can tell when the model, not the system under test, set the pace.

Every token records, in its own text, the wall-clock time (time.time_ns(), CLOCK_REALTIME,
comparable between processes on one machine) at which it was written to the socket:
"t1763785533071234567 ". The first token also carries the time the request had been read in
full: "r1763785533071200000 t1763785533071234567 ". A client that receives the token computes
the model->client delay of each token, and the model's own time to first byte, exactly.

`GET /stats` answers counters as JSON (requests, peak in-flight requests, peak open
connections, paced tokens written late by more than 1, 5, 20 and 100 ms);
`POST /stats/reset` zeroes them. Nothing else is served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_TOKENS = re.compile(r"tokens=(\d+)")
_RATE = re.compile(r"rate=(\d+(?:\.\d+)?)")
_TTFB = re.compile(r"ttfb=(\d+(?:\.\d+)?)")
# Lateness thresholds (ms) of the paced tokens counted in /stats.
LATE_MS = (1, 5, 20, 100)
_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_FRAME_START = b'data: {"choices":[{"index":0,"delta":{"content":"'
_FRAME_END = b'"},"finish_reason":null}]}\n\n'
_DONE = b"data: [DONE]\n\n"
_LAST_CHUNK = b"0\r\n\r\n"


@dataclass(slots=True)
class Counters:
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    connections: int = 0
    peak_connections: int = 0
    connections_opened: int = 0
    paced_tokens: int = 0
    late: list[int] = field(default_factory=lambda: [0] * len(LATE_MS))
    max_late_ms: float = 0.0

    def token_written(self, late_s: float) -> None:
        self.paced_tokens += 1
        late_ms = late_s * 1000
        for index, limit in enumerate(LATE_MS):
            if late_ms > limit:
                self.late[index] += 1
        self.max_late_ms = max(self.max_late_ms, late_ms)

    def reset(self) -> None:
        self.requests = 0
        self.peak_in_flight = self.in_flight
        self.peak_connections = self.connections
        self.connections_opened = 0
        self.paced_tokens = 0
        self.late = [0] * len(LATE_MS)
        self.max_late_ms = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "connections": self.connections,
            "peak_connections": self.peak_connections,
            "connections_opened": self.connections_opened,
            "paced_tokens": self.paced_tokens,
            **{
                f"late_over_{limit}ms": count
                for limit, count in zip(LATE_MS, self.late, strict=True)
            },
            "max_late_ms": round(self.max_late_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class AnswerShape:
    tokens: int
    rate: float  # tokens per second; 0 = unpaced
    ttfb_ms: float = 0.0  # from the request read to the first token

    @classmethod
    def from_model(cls, model: str, default: AnswerShape) -> AnswerShape:
        tokens = _TOKENS.search(model)
        rate = _RATE.search(model)
        ttfb = _TTFB.search(model)
        return cls(
            max(1, int(tokens.group(1))) if tokens else default.tokens,
            float(rate.group(1)) if rate else default.rate,
            float(ttfb.group(1)) if ttfb else default.ttfb_ms,
        )

    @property
    def paced(self) -> bool:
        return self.rate > 0 or self.ttfb_ms > 0


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of the response body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _token_frame(text: str) -> bytes:
    return _chunk(_FRAME_START + text.encode() + _FRAME_END)


def _closing_frames(prompt_tokens: int, completion_tokens: int) -> bytes:
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    usage = {
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    usage_frame = b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
    return _chunk(finish) + _chunk(usage_frame) + _chunk(_DONE) + _LAST_CHUNK


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered one after the other."""

    def __init__(self, server: FakeModel) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._paced: _PacedAnswer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counters = self._server.counters
        counters.connections += 1
        counters.connections_opened += 1
        counters.peak_connections = max(counters.peak_connections, counters.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.counters.connections -= 1
        self._transport = None
        if self._paced is not None:
            self._paced.stop()
            self._paced_done()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _MAX_HEAD_BYTES + _MAX_BODY_BYTES:
            self._close()
            return
        self._next_request()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _next_request(self) -> None:
        while not self._busy and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD_BYTES:
                    self._close()
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            request_line, _, header_text = head.partition("\r\n")
            parts = request_line.split(" ")
            if len(parts) != 3:
                self._close()
                return
            method, path = parts[0], parts[1]
            length = 0
            for line in header_text.split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or "0")
            if length > _MAX_BODY_BYTES:
                self._close()
                return
            if len(self._buffer) < end + 4 + length:
                return  # the body is still coming
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            received_ns = time.time_ns()
            self._dispatch(method, path, body, received_ns)

    def _dispatch(self, method: str, path: str, body: bytes, received_ns: int) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            self._answer(body, received_ns)
        elif method == "GET" and path == "/stats":
            self._send_json(200, self._server.counters.as_dict())
        elif method == "POST" and path == "/stats/reset":
            self._server.counters.reset()
            self._send_json(200, self._server.counters.as_dict())
        else:
            self._send_json(404, {"error": {"message": f"no route for {method} {path}"}})

    def _send_json(self, status: int, payload: object) -> None:
        assert self._transport is not None
        body = json.dumps(payload).encode()
        phrase = "OK" if status == 200 else "Not Found"
        self._transport.write(
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    def _answer(self, body: bytes, received_ns: int) -> None:
        found = _MODEL_FIELD.search(body)
        model = found.group(1).decode("utf-8", "replace") if found else ""
        shape = AnswerShape.from_model(model, self._server.default_shape)
        counters = self._server.counters
        counters.requests += 1
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        prompt_tokens = max(1, len(body) // 4)
        if not shape.paced:
            try:
                self._write_unpaced(shape.tokens, received_ns, prompt_tokens)
            finally:
                counters.in_flight -= 1
            return
        assert self._transport is not None
        self._busy = True
        self._paced = _PacedAnswer(
            self._transport, shape, received_ns, prompt_tokens, counters, self._paced_done
        )

    def _write_unpaced(self, tokens: int, received_ns: int, prompt_tokens: int) -> None:
        transport = self._transport
        assert transport is not None
        now = time.time_ns()
        transport.write(_STREAM_HEAD + _token_frame(f"r{received_ns} t{now} "))
        for _ in range(tokens - 1):
            transport.write(_token_frame(f"t{time.time_ns()} "))
        transport.write(_closing_frames(prompt_tokens, tokens))

    def _paced_done(self) -> None:
        if self._paced is None:
            return
        self._paced = None
        self._server.counters.in_flight -= 1
        self._busy = False
        if self._transport is not None and self._buffer:
            self._next_request()


class _PacedAnswer:
    """One answer written token by token on the event loop's timer: token i is due
    `ttfb + i / rate` seconds after the start, each write stamped when it happens."""

    def __init__(
        self,
        transport: asyncio.Transport,
        shape: AnswerShape,
        received_ns: int,
        prompt_tokens: int,
        counters: Counters,
        done: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._shape = shape
        self._received_ns = received_ns
        self._prompt_tokens = prompt_tokens
        self._counters = counters
        self._done = done
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time() + shape.ttfb_ms / 1000
        self._interval = 1.0 / shape.rate if shape.rate > 0 else 0.0
        self._index = 0
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._start, self._write)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self) -> None:
        self._timer = None
        transport = self._transport
        if transport.is_closing():
            self._done()
            return
        shape = self._shape
        now = self._loop.time()
        while True:  # unpaced after the first byte: every token at once
            index = self._index
            due = self._start + index * self._interval
            self._counters.token_written(max(0.0, now - due))
            if index == 0:
                frame = _token_frame(f"r{self._received_ns} t{time.time_ns()} ")
                transport.write(_STREAM_HEAD + frame)
            else:
                transport.write(_token_frame(f"t{time.time_ns()} "))
            self._index = index + 1
            if self._index >= shape.tokens:
                transport.write(_closing_frames(self._prompt_tokens, shape.tokens))
                self._done()
                return
            if self._interval:
                break
        self._timer = self._loop.call_at(self._start + self._index * self._interval, self._write)


class FakeModel:
    def __init__(self, default_shape: AnswerShape) -> None:
        self.default_shape = default_shape
        self.counters = Counters()

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=4096, reuse_address=True
        )
        bound = server.sockets[0].getsockname()
        print(f"listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fake_model")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0 picks one)")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--rate", type=float, default=0.0, help="tokens per second, 0: unpaced")
    parser.add_argument("--ttfb", type=float, default=0.0, help="ms before the first token")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    model = FakeModel(AnswerShape(max(1, args.tokens), args.rate, args.ttfb))
    asyncio.run(model.serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
