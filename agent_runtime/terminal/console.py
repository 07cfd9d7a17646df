"""Line input and streamed output for the terminal client, usable from asyncio.

Lines are read by a thread with os.read on the file descriptor, so the event loop keeps
running (streaming tokens, answering Ctrl-C) while the user types, and the terminal keeps
its ordinary line editing. Ctrl-C is routed to a callback instead of raising
KeyboardInterrupt at an arbitrary point.

Everything written is passed through visible(): text from the model or a tool can neither
redraw a prompt nor drive the terminal. page() shows a long text whole, a screenful at a time.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from agent_runtime.terminal.visible import screen_lines, visible

# A screenful of a paged text leaves room for the pager's question and the line it was on.
PAGER_ROWS_LEFT = 2


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

    async def page(self, text: str) -> bool:
        """Show `text` whole: at once when it fits on the screen, else a screenful at a time,
        the next one when the user presses Enter. False if input ended before the last one."""
        columns, rows = shutil.get_terminal_size()
        lines = screen_lines(visible(text), columns)
        per_page = max(rows - PAGER_ROWS_LEFT, 1)
        for start in range(0, len(lines), per_page):
            end = min(start + per_page, len(lines))
            self.write("".join(f"{line}\n" for line in lines[start:end]))
            if end < len(lines):
                shown = f"lines {start + 1}-{end} of {len(lines)}"
                if await self.read_line(f"-- more: {shown}; Enter for the next page --") is None:
                    return False
        return True

    def write(self, text: str) -> None:
        self._out.write(visible(text))
        self._out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def write_dim(self, text: str) -> None:
        """`text` shown faint on a terminal (ANSI SGR 2), as it is elsewhere. Only the style
        is ours: what is in `text` is made visible as anything written is."""
        if not self._is_terminal():
            self.write(text)
            return
        self._out.write(f"\x1b[2m{visible(text)}\x1b[0m")
        self._out.flush()

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
