"""Line input and streamed output for the terminal client, usable from asyncio.

Lines are read by a thread with os.read on the file descriptor, so the event loop keeps
running (streaming tokens, answering Ctrl-C) while the user types, and the terminal keeps
its ordinary line editing. Ctrl-C is routed to a callback instead of raising
KeyboardInterrupt at an arbitrary point.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO


class Console:
    def __init__(self, stdin_fd: int = 0, out: TextIO | None = None) -> None:
        self._stdin_fd = stdin_fd
        self._out = out or sys.stdout
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None
        self._prompt = ""

    def start(self, on_interrupt: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        self._reader = threading.Thread(target=self._read_lines, args=(loop,), daemon=True)
        self._reader.start()

    def stop(self) -> None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def read_line(self, prompt: str) -> str | None:
        """The next line the user enters (without its newline); None at end of input."""
        self._prompt = prompt
        self.write(prompt)
        line = await self._lines.get()
        self._prompt = ""
        if line is None:
            self._lines.put_nowait(None)  # end of input stays the end for later reads
        return line

    def reprompt(self, notice: str) -> None:
        """Show a notice on its own line, then the prompt being waited on again."""
        self.write(f"\n{notice}\n{self._prompt}")

    def write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def dim(self, text: str) -> str:
        """`text` shown faint on a terminal (ANSI SGR 2), as it is elsewhere."""
        return f"\x1b[2m{text}\x1b[0m" if self._is_terminal() else text

    def _is_terminal(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while True:
            try:
                data = os.read(self._stdin_fd, 4096)
            except OSError:
                data = b""
            if not data:
                if pending:
                    loop.call_soon_threadsafe(self._lines.put_nowait, pending)
                loop.call_soon_threadsafe(self._lines.put_nowait, None)
                return
            pending += decoder.decode(data)
            *complete, pending = pending.split("\n")
            for line in complete:
                loop.call_soon_threadsafe(self._lines.put_nowait, line.rstrip("\r"))
