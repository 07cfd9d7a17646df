"""A zero-latency OpenAI-compatible chat-completions endpoint for the benchmark.

    python -m benchmarks.fake_model [--listen 127.0.0.1:0] [--tokens 50] [--rate 0]

Prints `listening on 127.0.0.1:PORT` on stderr once it accepts connections.

`POST /v1/chat/completions` always streams (chunked SSE, HTTP/1.1 keep-alive) an answer of
`tokens` tokens at `rate` tokens per second (0: as fast as the socket takes them). A request
may override both through its `model` field, e.g. "bench/tokens=40/rate=20", so one process
serves every phase; the runtime and the floor both pass the model name through.

Every token records, in its own text, the wall-clock time (time.time_ns(), CLOCK_REALTIME,
comparable between processes on one machine) at which it was written to the socket:
"t1763785533071234567 ". The first token also carries the time the request had been read in
full: "r1763785533071200000 t1763785533071234567 ". A client that receives the token computes
the model->client delay of each token, and the model's own time to first byte, exactly.

`GET /stats` answers counters as JSON (requests, peak in-flight requests, peak open
connections); `POST /stats/reset` zeroes them. Nothing else is served.
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
from dataclasses import dataclass

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_TOKENS = re.compile(r"tokens=(\d+)")
_RATE = re.compile(r"rate=(\d+(?:\.\d+)?)")
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

    def reset(self) -> None:
        self.requests = 0
        self.peak_in_flight = self.in_flight
        self.peak_connections = self.connections
        self.connections_opened = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "connections": self.connections,
            "peak_connections": self.peak_connections,
            "connections_opened": self.connections_opened,
        }


@dataclass(frozen=True, slots=True)
class AnswerShape:
    tokens: int
    rate: float  # tokens per second; 0 = unpaced

    @classmethod
    def from_model(cls, model: str, default: AnswerShape) -> AnswerShape:
        tokens = _TOKENS.search(model)
        rate = _RATE.search(model)
        return cls(
            max(1, int(tokens.group(1))) if tokens else default.tokens,
            float(rate.group(1)) if rate else default.rate,
        )


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
        self._task: asyncio.Task[None] | None = None

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
        if self._task is not None:
            self._task.cancel()

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
        if shape.rate <= 0:
            try:
                self._write_unpaced(shape.tokens, received_ns, prompt_tokens)
            finally:
                counters.in_flight -= 1
            return
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(
            self._write_paced(shape, received_ns, prompt_tokens)
        )
        self._task.add_done_callback(self._paced_done)

    def _write_unpaced(self, tokens: int, received_ns: int, prompt_tokens: int) -> None:
        transport = self._transport
        assert transport is not None
        now = time.time_ns()
        transport.write(_STREAM_HEAD + _token_frame(f"r{received_ns} t{now} "))
        for _ in range(tokens - 1):
            transport.write(_token_frame(f"t{time.time_ns()} "))
        transport.write(_closing_frames(prompt_tokens, tokens))

    async def _write_paced(self, shape: AnswerShape, received_ns: int, prompt_tokens: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = 1.0 / shape.rate
        for index in range(shape.tokens):
            transport = self._transport
            if transport is None:
                return
            if index:
                delay = start + index * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                transport = self._transport
                if transport is None:
                    return
                transport.write(_token_frame(f"t{time.time_ns()} "))
            else:
                frame = _token_frame(f"r{received_ns} t{time.time_ns()} ")
                transport.write(_STREAM_HEAD + frame)
        if self._transport is not None:
            self._transport.write(_closing_frames(prompt_tokens, shape.tokens))

    def _paced_done(self, task: asyncio.Task[None]) -> None:
        self._server.counters.in_flight -= 1
        self._task = None
        self._busy = False
        if not task.cancelled() and task.exception() is not None:
            print(f"fake model: answer failed: {task.exception()!r}", file=sys.stderr)
            self._close()
            return
        if self._transport is not None and self._buffer:
            self._next_request()


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
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    model = FakeModel(AnswerShape(max(1, args.tokens), args.rate))
    asyncio.run(model.serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
