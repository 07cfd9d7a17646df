"""The regular expressions of a declared tool's JSON Schema ("pattern", the names of
"patternProperties"), compiled in bounded memory and time.

A client may be hostile, and Python's `re` backtracks without end on a pattern such as
^(a|aa)+$ against "aaa…b": nothing can stop it. So the model's arguments are matched with
`regex`, whose matches stop at a time limit (argument_check.py). Its compiler, though, writes
counted repetitions out: a{1000} costs as much as a thousand a's, and nested ones multiply, so
(?:a{65535}){65535} would take all the memory there is. A pattern is refused when that
written-out size (`pattern_cost`) is over MAX_PATTERN_COST: when declared, and again before
it is ever compiled.
"""

from __future__ import annotations

import re
from functools import lru_cache

import regex

# What the pattern costs written out (see pattern_cost). ^[0-9a-f]{64}$ costs 66 and a UUID's
# pattern about 40; at most MAX_PATTERN_COST, a compiled pattern holds about 150 KB.
MAX_PATTERN_COST = 1000
# Compiled patterns kept (at most MAX_PATTERN_COST each): a schema's patterns are matched
# against every call of its tool.
_COMPILED_KEPT = 256
_MAX_SHOWN = 100  # characters of a pattern quoted in a problem
# A counted repetition: {m}, {m,} or {m,n}. Its minimum m is what the compiler writes out.
_COUNTED = re.compile(r"\{(\d+)(?:,\d*)?\}")
# An inline flag group that turns on the verbose mode (?x), in which whitespace and comments
# between an item and its repetition would hide the repetition from pattern_cost.
_VERBOSE_FLAG = re.compile(r"\?\^?[a-zA-Z]*x")


class UnusablePattern(ValueError):
    """A pattern that cannot be compiled, or would cost too much to."""


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be one of a declared schema's patterns; None when it can."""
    try:
        compiled_pattern(pattern)
    except UnusablePattern as exc:
        return str(exc)
    return None


def compiled_pattern(pattern: str) -> regex.Pattern[str]:
    """`pattern` compiled by `regex`; UnusablePattern when it cannot be, or costs too much."""
    cost = pattern_cost(pattern)
    if cost is None:
        raise UnusablePattern(f"pattern '{_shown(pattern)}': the x (verbose) flag is not supported")
    if cost > MAX_PATTERN_COST:
        raise UnusablePattern(
            f"pattern '{_shown(pattern)}' repeats too much: its counted repetitions "
            f"({{n}}, {{n,}}, {{n,m}}) written out make {cost} items; at most {MAX_PATTERN_COST}"
        )
    return _compile(pattern)


@lru_cache(maxsize=_COMPILED_KEPT)
def _compile(pattern: str) -> regex.Pattern[str]:
    try:
        # Not in regex's own cache of 500: ours holds fewer, and only patterns costed first.
        return regex.compile(pattern, cache_pattern=False)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise UnusablePattern(f"pattern '{_shown(pattern)}' cannot be compiled: {exc}") from exc


def pattern_cost(pattern: str) -> int | None:
    """How many items the pattern makes with its counted repetitions written out: items
    along the pattern add up (both sides of an alternation too), an item repeated at least m
    times counts m times, a group the sum of what is inside it. None for a pattern that turns
    the verbose mode on.

    An upper bound, never less than what `regex` writes out: an escape or a character class
    is one item; anything this reading takes for a repetition that is not one (`\\x{41}`, a
    brace inside a comment) only counts more."""
    # One frame per open group: [the items so far, the items of the last element].
    frames: list[list[int]] = [[0, 0]]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        frame = frames[-1]
        if char == "{" and (counted := _COUNTED.match(pattern, index)) is not None:
            times = int(counted.group(1))
            if times > 1:
                frame[0] += frame[1] * (times - 1)
                frame[1] *= times
            index = counted.end()
            continue
        if char == "(":
            if _VERBOSE_FLAG.match(pattern, index + 1):
                return None
            frames.append([0, 0])
        elif char == ")" and len(frames) > 1:
            inner = frames.pop()[0]
            frames[-1][0] += max(inner, 1)
            frames[-1][1] = max(inner, 1)
        elif char == "|":
            frame[1] = 0
        elif char in "?*+":
            pass  # a repetition (at least 0 or 1 times), its suffix, or a group's "(?"
        else:
            if char == "\\":
                index += 1
            elif char == "[":
                index = _end_of_class(pattern, index)
            frame[0] += 1
            frame[1] = 1
        index += 1
    while len(frames) > 1:  # unclosed groups: regex refuses them anyway
        inner = frames.pop()[0]
        frames[-1][0] += inner
    return frames[0][0]


def _end_of_class(pattern: str, start: int) -> int:
    """The index of the "]" that closes the character class opened at `start` (the last
    index when none does): a "]" first in the class (after "[" or "[^") is one of its
    characters, and a backslash escapes the character after it."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return min(index, len(pattern) - 1)


def _shown(pattern: str) -> str:
    return pattern if len(pattern) <= _MAX_SHOWN else f"{pattern[: _MAX_SHOWN - 3]}..."
