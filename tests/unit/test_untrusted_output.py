"""The repairs and bounds applied to model output (the client's tests send it over HTTP)."""

from __future__ import annotations

import json
import logging

import pytest

from agent_runtime.domain.text import well_formed
from agent_runtime.infrastructure.llm.untrusted_output import (
    MAX_ARGUMENT_DEPTH,
    MAX_TOKEN_COUNT,
    AnswerLimits,
    StreamedText,
    checked_arguments,
    nests_deeper_than,
    token_count,
)

GRIN = "\U0001f600"
HIGH, LOW = "\ud83d", "\ude00"  # GRIN's surrogate pair


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("plain", "plain"),
        ("caf\u00e9 \u20ac", "caf\u00e9 \u20ac"),
        (f"a{HIGH}{LOW}b", f"a{GRIN}b"),  # a pair is its character
        ("a\ud800b", "a\ufffdb"),  # a lone high surrogate
        ("a\udc00", "a\ufffd"),  # a lone low one
        (f"{LOW}{HIGH}", "\ufffd\ufffd"),  # the wrong order is no pair
    ],
)
def test_well_formed(given: str, expected: str) -> None:
    assert well_formed(given) == expected
    well_formed(given).encode("utf-8")  # what the store and protobuf need


def test_a_pair_split_across_deltas_is_joined() -> None:
    text = StreamedText()
    assert text.add(f"x{HIGH}") == "x"  # held back until the next delta says what it is
    assert text.add(f"{LOW}y") == f"{GRIN}y"
    assert text.end() == ""


def test_a_high_surrogate_nothing_follows_becomes_the_replacement_character() -> None:
    text = StreamedText()
    assert text.add(f"x{HIGH}") == "x"
    assert text.end() == "\ufffd"
    assert text.end() == ""


def test_a_held_surrogate_followed_by_no_pair_is_replaced() -> None:
    text = StreamedText()
    assert text.add(HIGH) == ""
    assert text.add("y") == "\ufffdy"


def nested(depth: int, kind: str = "object") -> str:
    value: object = 1
    for _ in range(depth):
        value = {"a": value} if kind == "object" else [value]
    return json.dumps(value)


@pytest.mark.parametrize("kind", ["object", "array"])
def test_depth_is_counted_without_parsing(kind: str) -> None:
    assert not nests_deeper_than(nested(MAX_ARGUMENT_DEPTH, kind), MAX_ARGUMENT_DEPTH)
    assert nests_deeper_than(nested(MAX_ARGUMENT_DEPTH + 1, kind), MAX_ARGUMENT_DEPTH)
    assert nests_deeper_than("[" * 100_000, MAX_ARGUMENT_DEPTH)  # json.loads: RecursionError


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"code": "[[[[{{{{" * 10, "quote": 'a "quoted [ bracket'})
    assert not nests_deeper_than(text, 2)


def test_an_unterminated_string_runs_to_the_end() -> None:
    # Matched in one pass: the escaped quotes inside it do not each start another string
    # (which would take quadratic time), and its brackets do not count.
    text = "[" * 30 + '"' + '\\"[' * 200_000
    assert nests_deeper_than(text, MAX_ARGUMENT_DEPTH)
    assert not nests_deeper_than("[" * 10 + '"' + '\\"[' * 200_000, MAX_ARGUMENT_DEPTH)


def test_checked_arguments() -> None:
    assert checked_arguments('{"path": "a.py"}') == ('{"path": "a.py"}', "")
    assert checked_arguments('{"path": ') == ('{"path": ', "")  # the domain says why
    deep, problem = checked_arguments(nested(50))
    assert (deep, problem) == (
        "",
        f"the arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels",
    )


@pytest.mark.parametrize(
    "arguments",
    [
        '{"path": "a\ud800"}',  # a lone surrogate in the text itself
        '{"path": "a\\ud800"}',  # a lone surrogate escaped in the JSON
        '{"a\\udc00": "x"}',  # in a key
    ],
)
def test_lone_surrogates_in_arguments_are_replaced(arguments: str) -> None:
    kept, problem = checked_arguments(arguments)
    assert problem == ""
    kept.encode("utf-8")
    parsed = json.dumps(json.loads(kept), ensure_ascii=False)  # as the domain will parse them
    assert "\ufffd" in parsed
    parsed.encode("utf-8")


@pytest.mark.parametrize(
    "number",
    [
        "2" + "0" * 308,  # 2e308: past the largest double
        "-2" + "0" * 308,
        "1" + "0" * 5000,  # past what Python parses (4300 digits)
    ],
)
def test_an_integer_no_double_holds_is_not_kept(number: str) -> None:
    # protobuf's Struct holds every number as a double: such a call could not be sent.
    assert checked_arguments(f'{{"path": "a", "line": [{number}]}}') == (
        "",
        "the arguments hold an integer too large for a double (past 1.8e308)",
    )


@pytest.mark.parametrize(
    "arguments",
    [
        '{"line": 1' + "0" * 308 + "}",  # 1e308: a double holds it
        '{"line": 1.' + "0" * 5000 + "}",  # a float parses, whatever its digits
        '{"path": "' + "9" * 5000 + '"}',  # digits in a string are text
        '{"line": 1e400}',  # JSON reads it as infinity, which a double holds
    ],
)
def test_numbers_a_double_holds_are_kept(arguments: str) -> None:
    assert checked_arguments(arguments) == (arguments, "")


def test_an_escaped_surrogate_pair_in_arguments_stays_its_character() -> None:
    kept, _ = checked_arguments('{"face": "\\ud83d\\ude00"}')
    assert json.loads(kept) == {"face": GRIN}


@pytest.mark.parametrize(
    ("value", "counted"),
    [(12, 12), (0, 0), (MAX_TOKEN_COUNT, MAX_TOKEN_COUNT), (-1, 0), (2**32, 0), ("7", 0)],
)
def test_token_counts_outside_the_plausible_range_are_ignored(
    value: object, counted: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert token_count(value, "prompt_tokens") == counted
    warned = isinstance(value, int) and counted != value
    assert ("prompt_tokens" in caplog.text) == warned


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tool_arguments"):
        AnswerLimits(tool_arguments=0)
