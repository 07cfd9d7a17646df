"""Text from the model or a tool, made safe to print on a terminal.

A control character (escape sequences, carriage return, backspace, the 8-bit C1 controls) or
an invisible format character (a right-to-left override, zero-width characters) could redraw
a prompt, hide part of a command, or drive the terminal (e.g. write the clipboard with OSC 52).
Every one of them is shown as a visible escape, JSON's way (\\r, \\u001b), so what a person
reads is what is there. Newlines and tabs are kept: they only lay text out.
"""

from __future__ import annotations

import unicodedata

_KEPT = frozenset("\n\t")
# Controls, format characters, surrogates, line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT_ESCAPES = {"\r": "\\r", "\b": "\\b", "\f": "\\f"}
TAB_CELLS = 8


def visible(text: str) -> str:
    """`text` with every character that could act on the terminal shown as an escape."""
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(_shown(c) for c in text)


def _shown(char: str) -> str:
    if char in _KEPT or unicodedata.category(char) not in _HIDDEN_CATEGORIES:
        return char
    if escape := _SHORT_ESCAPES.get(char):
        return escape
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def screen_lines(text: str, columns: int) -> list[str]:
    """`text` as the lines it takes on a terminal `columns` cells wide (long lines broken
    where the terminal would wrap them). Expects visible() text."""
    columns = max(columns, 1)
    lines: list[str] = []
    for line in text.split("\n"):
        start, width = 0, 0
        for index, char in enumerate(line):
            cells = _cells(char)
            if width + cells > columns and index > start:
                lines.append(line[start:index])
                start, width = index, 0
            width += cells
        lines.append(line[start:])
    return lines


def _cells(char: str) -> int:
    if char == "\t":
        return TAB_CELLS  # at most; counting it wide only makes a page shorter
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
