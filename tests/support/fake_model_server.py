"""A real HTTP/1.1 server speaking the OpenAI chat-completions protocol, scripted by tests.

    async with FakeModelServer() as server:
        server.enqueue(text_answer("Hello there"), tool_call_answer("read_file", {"path": "a"}))
        ... point a client at server.base_url ...
        assert server.requests[0]["model"] == "m"

Each request to `.../chat/completions` takes the next queued ScriptedResponse (else
`default_response`, else HTTP 500). Responses stream with `Transfer-Encoding: chunked`; every
SSE frame is its own HTTP chunk, written and drained before the next, so a client sees the
frames as separate reads. Connections are kept alive between requests, as a real server does.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

RequestBody = dict[str, Any]
Responder = Callable[[RequestBody, "ResponseWriter"], Awaitable[None]]

_ARGUMENT_FRAGMENT_CHARS = 5
_DEFAULT_ERROR_BODY = '{"error": {"message": "scripted failure", "type": "server_error"}}'


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    """One answer: `respond(request_body, writer)` writes it. Build with the helpers below,
    or write a custom responder against ResponseWriter."""

    respond: Responder
    label: str = ""


class ResponseWriter:
    """Writes one HTTP response on a connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, keep_alive: bool
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.keep_alive = keep_alive
        self.started = False
        self._streaming = False

    async def send_body(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A complete response with Content-Length."""
        head = self._head(status, {"Content-Type": content_type, **(headers or {})})
        self._writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self._writer.drain()

    async def send_json(self, status: int, payload: Any) -> None:
        await self.send_body(status, json.dumps(payload).encode())

    async def start_stream(
        self,
        status: int = 200,
        *,
        content_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        head = self._head(
            status,
            {"Content-Type": content_type, "Cache-Control": "no-cache", **(headers or {})},
        )
        self._writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
        await self._writer.drain()
        self._streaming = True

    async def send_chunk(self, data: bytes) -> None:
        """One HTTP chunk, flushed to the socket before returning. Empty data is skipped
        (an empty chunk would end the body)."""
        if not data:
            return
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self._writer.drain()

    async def send_event(self, payload: Mapping[str, Any] | str) -> None:
        """One SSE frame `data: <json>\\n\\n` (a str is sent as is, e.g. "[DONE]")."""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await self.send_chunk(f"data: {data}\n\n".encode())

    async def end_stream(self) -> None:
        if self._streaming:
            self._streaming = False
            self._writer.write(b"0\r\n\r\n")
            await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, HTTP or not (a broken proxy); close the connection after."""
        self.started = True
        self.keep_alive = False
        self._writer.write(data)
        await self._writer.drain()

    def abort(self) -> None:
        """Close the socket now, leaving the chunked body unterminated."""
        self.keep_alive = False
        self._streaming = False
        self._writer.transport.abort()

    async def wait_for_disconnect(self) -> None:
        """Return once the client has closed the connection (EOF or reset)."""
        self.keep_alive = False
        try:
            while await self._reader.read(65536):
                pass
        except ConnectionError:
            pass

    async def finish(self) -> None:
        """Called by the server after the responder: end what it left open."""
        if not self.started:
            await self.send_json(500, _error_payload("scripted response wrote nothing"))
        elif self._streaming:
            await self.end_stream()

    def _head(self, status: int, headers: Mapping[str, str]) -> bytes:
        self.started = True
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if not self.keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeModelServer:
    """`tls`: serve HTTPS with that context (base_url then starts with https://)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        # The request targets as sent: a path, or a whole URL when sent through a proxy.
        self.targets: list[str] = []
        self._tls = tls
        self.on_request: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.default_response: ScriptedResponse | None = None
        # Exceptions raised while answering (by on_request or a custom responder), for debugging:
        # the connection they happened on is closed, which the client sees as a dropped stream.
        self.errors: list[BaseException] = []
        self.connections_opened = 0  # TCP connections accepted, to check keep-alive reuse
        self._queue: deque[ScriptedResponse] = deque()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._closing = False

    def enqueue(self, *responses: ScriptedResponse) -> None:
        self._queue.extend(responses)

    @property
    def queued(self) -> list[str]:
        """The labels of the scripted responses no request has taken yet."""
        return [response.label for response in self._queue]

    def clear_queue(self) -> None:
        self._queue.clear()

    async def start(self) -> None:
        self._closing = False
        self._server = await asyncio.start_server(
            self._serve_connection, "127.0.0.1", 0, ssl=self._tls
        )
        port = self._server.sockets[0].getsockname()[1]
        scheme = "http" if self._tls is None else "https"
        self.base_url = f"{scheme}://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.transport.abort()
            return
        self._connections.add(task)
        self.connections_opened += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # drain() then waits until every byte reached the kernel, so abort() loses nothing.
        # (Not over TLS: asyncio's TLS transport never counts its buffer down to 0 again.)
        if self._tls is None:
            writer.transport.set_write_buffer_limits(high=0)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                keep_alive = request.headers.get("connection", "").lower() != "close"
                out = ResponseWriter(reader, writer, keep_alive=keep_alive)
                await self._answer(request, out)
                await out.finish()
                if not out.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Cancelled by stop(): ending normally, because Python 3.11's start_server logs a
            # spurious traceback for a connection task that ends cancelled.
        except Exception as exc:  # reported through self.errors, not lost in a task
            self.errors.append(exc)
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    async def _answer(self, request: _Request, out: ResponseWriter) -> None:
        try:
            parsed = json.loads(request.body) if request.body else {}
        except ValueError:
            parsed = None
        body: dict[str, Any] = (
            parsed
            if isinstance(parsed, dict)
            else {"_raw_body": request.body.decode("utf-8", "replace")}
        )
        self.requests.append(body)
        self.headers.append(request.headers)
        self.targets.append(request.path)
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            await out.send_json(
                404, _error_payload(f"no route for {request.method} {request.path}")
            )
            return
        if not isinstance(parsed, dict):
            await out.send_json(400, _error_payload("the body is not a JSON object"))
            return
        if self.on_request is not None:
            await self.on_request(body)
        scripted = self._queue.popleft() if self._queue else self.default_response
        if scripted is None:
            await out.send_json(500, _error_payload("no scripted response"))
            return
        await scripted.respond(body, out)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # closed between requests: the normal end of a kept-alive connection
        raise
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return _Request(method, path, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


# --- scripted responses ---------------------------------------------------------------------


def text_answer(text: str, *, usage: tuple[int, int] | None = (5, 7)) -> ScriptedResponse:
    """The text streamed one whitespace-separated word per chunk (spaces kept, so the deltas
    concatenate to `text`), then finish_reason "stop", the usage chunk and [DONE].
    A request with "stream": false (or no "stream") gets one JSON completion instead."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        if not request.get("stream"):
            message = {"role": "assistant", "content": text}
            await out.send_json(200, _completion(request, message, "stop", usage))
            return
        await out.start_stream()
        await out.send_event(_chunk(request, {"role": "assistant", "content": ""}))
        for word in words(text):
            await out.send_event(_chunk(request, {"content": word}))
        await _finish_stream(request, out, "stop", usage)

    return ScriptedResponse(respond, f"text_answer({text!r})")


class FloodingAnswer:
    """A long answer written as fast as the reader takes it: `events` deltas of `chars`
    characters each. It notes how far it got, and whether it has been waiting for the
    reader (blocked in drain) for at least `stall_seconds`: a reader that stopped."""

    def __init__(self, events: int, chars: int, *, stall_seconds: float = 0.5) -> None:
        self.events = events
        self.chars = chars
        self.written = 0  # deltas the socket took
        self.finished = False
        self.closed = asyncio.Event()  # the reader went away before the end
        self._stall_seconds = stall_seconds
        self._waiting_since: float | None = None

    def stalled(self) -> bool:
        since = self._waiting_since
        return since is not None and time.monotonic() - since >= self._stall_seconds

    def response(self) -> ScriptedResponse:
        async def respond(request: RequestBody, out: ResponseWriter) -> None:
            await out.start_stream()
            text = "x" * (self.chars - 1) + " "
            try:
                for _ in range(self.events):
                    self._waiting_since = time.monotonic()
                    await out.send_event(_chunk(request, {"content": text}))
                    self._waiting_since = None
                    self.written += 1
                await _finish_stream(request, out, "stop", (5, 7))
                self.finished = True
            except ConnectionError:
                self.closed.set()
                out.abort()

        return ScriptedResponse(respond, f"FloodingAnswer({self.events}x{self.chars})")


def tool_call_answer(
    tool_name: str,
    arguments: dict[str, Any],
    *,
    call_id: str = "call_1",
    content: str = "",
    extra_calls: list[tuple[str, dict[str, Any]]] | None = None,
    usage: tuple[int, int] | None = (5, 7),
    gate: asyncio.Event | None = None,
) -> ScriptedResponse:
    """A tool call (optionally preceded by text `content`). Streamed as OpenAI does: id and
    name in the call's first fragment, the arguments JSON in fragments of a few characters.
    The k-th extra call (k = 2, 3, ...) gets index k-1 and id f"{call_id}_{k}". With `gate`,
    the stream waits for it after the first call's first piece of arguments."""
    calls = [(call_id, tool_name, arguments)]
    calls += [(f"{call_id}_{k}", name, args) for k, (name, args) in enumerate(extra_calls or [], 2)]

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        if not request.get("stream"):
            message = {
                "role": "assistant",
                "content": content or None,
                "tool_calls": [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                    for cid, name, args in calls
                ],
            }
            await out.send_json(200, _completion(request, message, "tool_calls", usage))
            return
        await out.start_stream()
        await out.send_event(_chunk(request, {"role": "assistant", "content": None}))
        for word in words(content):
            await out.send_event(_chunk(request, {"content": word}))
        for index, (cid, name, args) in enumerate(calls):
            first = {
                "index": index,
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            await out.send_event(_chunk(request, {"tool_calls": [first]}))
            encoded = json.dumps(args)
            for start in range(0, len(encoded), _ARGUMENT_FRAGMENT_CHARS):
                piece = encoded[start : start + _ARGUMENT_FRAGMENT_CHARS]
                fragment = {"index": index, "function": {"arguments": piece}}
                await out.send_event(_chunk(request, {"tool_calls": [fragment]}))
                if gate is not None and index == start == 0:
                    await gate.wait()
        await _finish_stream(request, out, "tool_calls", usage)

    return ScriptedResponse(respond, f"tool_call_answer({tool_name!r})")


def reasoning_answer(
    reasoning: str,
    text: str,
    *,
    key: str = "reasoning_content",
    usage: tuple[int, int] | None = (5, 7),
) -> ScriptedResponse:
    """A reasoning model's answer: `reasoning` streamed word by word under `key`
    ("reasoning_content" as vLLM and DeepSeek send it, "reasoning" as OpenRouter does), then
    `text` as the answer. Not streamed: one completion with both."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        if not request.get("stream"):
            message = {"role": "assistant", "content": text, key: reasoning}
            await out.send_json(200, _completion(request, message, "stop", usage))
            return
        await out.start_stream()
        await out.send_event(_chunk(request, {"role": "assistant", "content": ""}))
        for word in words(reasoning):
            await out.send_event(_chunk(request, {key: word, "content": None}))
        for word in words(text):
            await out.send_event(_chunk(request, {"content": word}))
        await _finish_stream(request, out, "stop", usage)

    return ScriptedResponse(respond, f"reasoning_answer({reasoning!r}, {text!r})")


def gated_answer(words: list[str], gate: asyncio.Event) -> ScriptedResponse:
    """Streams the first word, waits for `gate`, then streams the rest and finishes."""
    return stepped_answer([words[:1], words[1:]], [gate])


def stepped_answer(
    steps: list[list[str]], gates: list[asyncio.Event], *, then_stall: bool = False
) -> ScriptedResponse:
    """Streams the words of steps[0] (one chunk each), waits for gates[0], streams those of
    steps[1], and so on (one gate between two steps), then finishes; or, `then_stall`, sends
    nothing more until the client closes the connection (a model hung mid-answer)."""
    assert len(gates) == len(steps) - 1

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        for index, step in enumerate(steps):
            if index:
                await gates[index - 1].wait()
            for word in step:
                await out.send_event(_chunk(request, {"content": word}))
        if then_stall:
            await _wait_for_disconnect(out, None)
        else:
            await _finish_stream(request, out, "stop", None)

    return ScriptedResponse(respond, f"stepped_answer({len(steps)} steps)")


def http_error(
    status: int, body: str = _DEFAULT_ERROR_BODY, *, headers: Mapping[str, str] | None = None
) -> ScriptedResponse:
    """A plain (non-streamed) error response; JSON content type when the body looks like JSON."""
    is_json = body.lstrip().startswith(("{", "["))

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.send_body(
            status,
            body.encode(),
            content_type="application/json" if is_json else "text/plain; charset=utf-8",
            headers=headers,
        )

    return ScriptedResponse(respond, f"http_error({status})")


def drop_connection_after(
    text: str, events: int, *, once: asyncio.Event | None = None
) -> ScriptedResponse:
    """Streams the first `events` words of `text` (one chunk each), then closes the socket
    without terminating the chunked body, like a crashed upstream; after `once` is set, if
    given (e.g. when the client has read a word: a connection lost before the reader took
    what had arrived loses that too)."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        for word in words(text)[:events]:
            await out.send_event(_chunk(request, {"content": word}))
        if once is not None:
            await once.wait()
        out.abort()

    return ScriptedResponse(respond, f"drop_connection_after({events})")


DONE_FRAME = b"data: [DONE]\n\n"


def sse_frame(delta: dict[str, Any], finish_reason: str | None = None, **fields: Any) -> bytes:
    """One raw SSE frame of a completion chunk with one choice (`fields` go beside "choices",
    e.g. usage=...), for raw_sse. json.dumps writes a lone surrogate as a \\udXXX escape, as a
    model server with a broken tokenizer does."""
    payload = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return f"data: {json.dumps({**payload, **fields})}\n\n".encode()


def tool_call_frame(
    index: int, call_id: str | None, name: str | None, arguments: str | Any = ""
) -> bytes:
    """A raw SSE frame with one tool-call fragment; None leaves the field out."""
    function: dict[str, Any] = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    fragment: dict[str, Any] = {"index": index, "type": "function", "function": function}
    if call_id is not None:
        fragment["id"] = call_id
    return sse_frame({"tool_calls": [fragment]})


def whole_body(
    status: int, body: bytes, content_type: str, *, headers: Mapping[str, str] | None = None
) -> ScriptedResponse:
    """A complete response with Content-Length, whatever the request asked (e.g. a proxy's
    HTML page, or JSON that is not a completion, with 200), with the headers given, whatever
    they claim."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.send_body(status, body, content_type=content_type, headers=headers)

    return ScriptedResponse(respond, f"whole_body({status}, {content_type!r})")


def endless_line(start: bytes, piece: bytes, *, up_to_bytes: int) -> ScriptedResponse:
    """A stream line that never ends: `start`, then `piece` again and again (no newline) up to
    `up_to_bytes`, then nothing more until the client closes the connection. A client that
    buffers lines without a bound would hold it all and wait forever."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        try:
            await out.send_chunk(start)
            sent = len(start)
            while sent < up_to_bytes:
                await out.send_chunk(piece)
                sent += len(piece)
        except ConnectionError:
            out.abort()  # the client gave up reading: what it should do
            return
        await _wait_for_disconnect(out, None)

    return ScriptedResponse(respond, f"endless_line({up_to_bytes} bytes)")


def raw_response(data: bytes) -> ScriptedResponse:
    """`data` as the whole response, head included, then the connection closed: a response
    that is not HTTP, or HTTP no well-behaved server sends."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.send_raw(data)

    return ScriptedResponse(respond, f"raw_response({data[:40]!r})")


def trickle(frames: list[bytes], byte: bytes, *, interval: float) -> ScriptedResponse:
    """Streams `frames` (each its own chunk), then `byte` every `interval` seconds, which never
    completes a line, until the client closes the connection."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        for frame in frames:
            await out.send_chunk(frame)
        await _wait_for_disconnect(out, interval, byte)

    return ScriptedResponse(respond, f"trickle({byte!r} every {interval}s)")


def raw_sse(frames: list[bytes]) -> ScriptedResponse:
    """Writes each byte string as its own HTTP chunk (so the client reads them split exactly
    there, whatever TCP does), then ends the body. Empty frames are skipped."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        for frame in frames:
            await out.send_chunk(frame)
        await out.end_stream()

    return ScriptedResponse(respond, f"raw_sse({len(frames)} frames)")


def stall_after(
    text: str = "",
    *,
    ping_interval: float | None = None,
    on_disconnect: Callable[[], None] | None = None,
) -> ScriptedResponse:
    """A hung model: starts the stream (role chunk, then the words of `text`, one chunk each),
    then sends nothing more until the client closes the connection, except an SSE comment
    ": ping" every `ping_interval` seconds if given (a proxy keeping the connection warm).
    Only the client disconnecting ends it; `on_disconnect` is then called."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.start_stream()
        await out.send_event(_chunk(request, {"role": "assistant", "content": ""}))
        for word in words(text):
            await out.send_event(_chunk(request, {"content": word}))
        await _wait_for_disconnect(out, ping_interval)
        if on_disconnect is not None:
            on_disconnect()

    return ScriptedResponse(respond, f"stall_after({text!r})")


def hang_until_disconnect(on_disconnect: Callable[[], None] | None = None) -> ScriptedResponse:
    """Sends nothing at all, not even the status line, until the client closes the
    connection; `on_disconnect` is then called."""

    async def respond(request: RequestBody, out: ResponseWriter) -> None:
        await out.wait_for_disconnect()
        out.abort()  # the server's fallback 500 then fails quietly on the closed connection
        if on_disconnect is not None:
            on_disconnect()

    return ScriptedResponse(respond, "hang_until_disconnect()")


async def _wait_for_disconnect(
    out: ResponseWriter, ping_interval: float | None, ping: bytes = b": ping\n\n"
) -> None:
    """Until the client closes the connection, sending `ping` every `ping_interval` seconds
    if given."""
    pinger = None if ping_interval is None else asyncio.create_task(_ping(out, ping_interval, ping))
    try:
        await out.wait_for_disconnect()
    finally:
        if pinger is not None:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)  # a ping may hit the closed socket
    out.abort()  # nothing may be written after this, not even the chunked terminator


async def _ping(out: ResponseWriter, interval: float, ping: bytes) -> None:
    while True:
        await asyncio.sleep(interval)  # the server's behaviour, not test synchronisation
        await out.send_chunk(ping)


def words(text: str) -> list[str]:
    """Whitespace-separated tokens with their trailing spaces: "".join(words(t)) == t."""
    return re.findall(r"^\s+|\S+\s*", text)


def _chunk(
    request: RequestBody, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


async def _finish_stream(
    request: RequestBody, out: ResponseWriter, finish_reason: str, usage: tuple[int, int] | None
) -> None:
    await out.send_event(_chunk(request, {}, finish_reason))
    if usage is not None:
        usage_chunk = _chunk(request, {})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(usage)
        await out.send_event(usage_chunk)
    await out.send_event("[DONE]")
    await out.end_stream()


def _completion(
    request: RequestBody,
    message: dict[str, Any],
    finish_reason: str,
    usage: tuple[int, int] | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        payload["usage"] = _usage(usage)
    return payload


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _error_payload(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_server_error"}}
