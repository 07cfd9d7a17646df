"""The terminal client's console: what it writes is made visible, and a long text is paged:
shown whole, a screenful at a time, only as fast as the user asks for the next."""

from __future__ import annotations

import io
import os

import pytest

from agent_runtime.terminal.console import Console


async def paged(text: str, typed: bytes) -> tuple[bool, str]:
    """page(text) on a 10 x 5 screen with `typed` as the user's input, then end of input."""
    read_end, write_end = os.pipe()
    out = io.StringIO()
    console = Console(read_end, out)
    console.start(lambda: None)
    try:
        os.write(write_end, typed)
        os.close(write_end)
        done, shown = await console.page(text), out.getvalue()
        # Until its reader saw the end, the descriptor stays open: closed, its number could be
        # reused by the next test's pipe, and read by this reader.
        while await console.read_line("") is not None:
            pass
        return done, shown
    finally:
        console.stop()
        os.close(read_end)


@pytest.fixture(autouse=True)
def small_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10")
    monkeypatch.setenv("LINES", "5")


async def test_a_text_that_fits_is_shown_at_once() -> None:
    assert await paged("short\nand\nsmall", b"") == (True, "short\nand\nsmall\n")


async def test_a_long_text_is_shown_a_screenful_at_a_time() -> None:
    text = "".join(str(n) * 10 for n in range(10))  # ten screen lines
    done, shown = await paged(text, b"\n\n\n")
    assert done
    assert shown.split("\n") == [
        "0000000000",
        "1111111111",
        "2222222222",
        "-- more: lines 1-3 of 10; Enter for the next page --3333333333",
        "4444444444",
        "5555555555",
        "-- more: lines 4-6 of 10; Enter for the next page --6666666666",
        "7777777777",
        "8888888888",
        "-- more: lines 7-9 of 10; Enter for the next page --9999999999",
        "",
    ]


async def test_the_rest_is_not_shown_when_input_ends() -> None:
    text = "".join(str(n) * 10 for n in range(10))
    done, shown = await paged(text, b"\n")
    assert not done
    assert "5555555555" in shown and "6666666666" not in shown


async def test_what_is_written_is_visible() -> None:
    out = io.StringIO()
    Console(0, out).write("a\x1b[2Kb\r\n")
    assert out.getvalue() == "a\\u001b[2Kb\\r\n"
