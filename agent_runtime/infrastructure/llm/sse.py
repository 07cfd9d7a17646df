"""An incremental server-sent-events parser (the WHATWG event-stream rules that matter)."""

from __future__ import annotations

import codecs
import re
import sys
from dataclasses import dataclass

# Only these three end a line; str.splitlines() would also split on \v, \f, \x1c, U+2028...
_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEEventTooLarge(ValueError):
    """A line or an event of the stream is longer than the parser's limit."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None


class SSEParser:
    """Turns the bytes of an event stream, split anywhere, into complete events.

    Feed every received piece to feed(); call flush() once the stream has ended.
    A line, or an event's data, longer than `max_chars` characters raises SSEEventTooLarge:
    a stream that never ends its line must not grow the buffer without bound.
    """

    def __init__(self, max_chars: int = sys.maxsize) -> None:
        self._max_chars = max_chars
        # utf-8-sig drops the optional leading BOM, as the spec asks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._pending = ""  # the start of a line whose end has not arrived yet
        self._skip_lf = False  # the last feed ended in \r: a \n starting the next one is its pair
        self._data: list[str] = []
        self._data_chars = 0
        self._event = ""
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        text = self._decoder.decode(data)
        if not text:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\n" not in text and "\r" not in text:
            self._pending += text
            if len(self._pending) > self._max_chars:
                raise self._too_large()
            return []
        buffer = self._pending + text
        # str.split is several times faster than a regex; only \r needs the regex.
        lines = _LINE_END.split(buffer) if "\r" in buffer else buffer.split("\n")
        self._pending = lines.pop()  # after the last line end: "" or a line's start
        if len(self._pending) > self._max_chars:
            raise self._too_large()
        # A lone \r at the very end already ended its line; remember to swallow its \n.
        self._skip_lf = buffer[-1] == "\r"
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """The stream has ended: dispatch what is pending, even without its final blank line.

        The spec would discard such an event; real servers do cut the last newline, so
        accepting it loses nothing and keeps a final `data: [DONE]` visible.
        """
        events: list[SSEEvent] = []
        # The decoder can only add U+FFFD for a truncated character here, never a line end.
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        self._skip_lf = False
        if rest:
            self._line(rest, events)
        self._line("", events)
        self._decoder.reset()
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(
                    SSEEvent(self._event or "message", "\n".join(self._data), self._last_id)
                )
            self._data = []
            self._data_chars = 0
            self._event = ""
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_chars += len(value) + 1
            if self._data_chars > self._max_chars:
                raise self._too_large()
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            # Per spec the last event id persists across events; a NUL makes the field ignored.
            self._last_id = value
        # "retry" and unknown fields are of no use to a client that never reconnects.

    def _too_large(self) -> SSEEventTooLarge:
        return SSEEventTooLarge(
            f"a line or event of the stream is longer than {self._max_chars} characters"
        )
