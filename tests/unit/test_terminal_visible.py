"""What the terminal client prints of the model's and the tools' text: every character that
could act on the terminal shown as an escape, the rest as it is."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_runtime.terminal.visible import screen_lines, visible


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode, 日本語, emoji ☕", "plain text, ünïcode, 日本語, emoji ☕"),
        ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
        ("erase\r\x1b[2Kredrawn", r"erase\r\u001b[2Kredrawn"),
        (
            "back\bspace, form\ffeed, bell\x07, delete\x7f",
            r"back\bspace, form\ffeed, bell\u0007, delete\u007f",
        ),
        ("8-bit CSI \x9b2J and NEL \x85", r"8-bit CSI \u009b2J and NEL \u0085"),
        (
            "right-to-left \u202eoverride, zero\u200bwidth",
            r"right-to-left \u202eoverride, zero\u200bwidth",
        ),
        ("line\u2028and paragraph\u2029separators", r"line\u2028and paragraph\u2029separators"),
        ("a lone surrogate \udce9", r"a lone surrogate \udce9"),
        ("a tag \U000e0041", r"a tag \U000e0041"),
        ("a backslash \\u001b stays one", "a backslash \\u001b stays one"),
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


@given(st.text())
def test_nothing_that_acts_on_a_terminal_is_left(text: str) -> None:
    shown = visible(text)
    hidden = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    assert all(c in "\n\t" or unicodedata.category(c) not in hidden for c in shown)
    assert visible(shown) == shown


def test_screen_lines_break_where_the_terminal_wraps() -> None:
    assert screen_lines("abcdefg\nhi", 3) == ["abc", "def", "g", "hi"]
    assert screen_lines("日本語", 4) == ["日本", "語"]  # two cells each
    assert screen_lines("e\u0301e\u0301e\u0301", 2) == ["e\u0301e\u0301", "e\u0301"]
    assert screen_lines("", 5) == [""]
