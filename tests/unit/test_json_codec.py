"""json_codec: JSON read and written as json does it, by orjson where the two agree."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from agent_runtime.infrastructure import json_codec

DOCUMENTS = [
    '{"choices": [{"delta": {"content": "héllo \\u00e9 😀"}, "index": 0}]}',
    '[1, 2.5, -3e-7, true, false, null, "", {}, []]',
    '{"a": 1, "a": 2}',  # the last one wins, in both
    '"\\ud83d\\ude00"',  # a surrogate pair, escaped
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_what_orjson_reads_is_what_json_reads(document: str) -> None:
    assert json_codec.loads(document) == json.loads(document)
    assert json_codec.loads(document.encode()) == json.loads(document)


@pytest.mark.parametrize(
    "document",
    ["NaN", '{"x": Infinity}', '"a\\ud800b"', "[1e999]"],
)
def test_what_only_json_accepts_is_read_by_json(document: str) -> None:
    read, expected = json_codec.loads(document), json.loads(document)
    assert repr(read) == repr(expected)  # NaN != NaN: compared as written


def test_what_neither_reads_fails_as_json_fails() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_codec.loads("{broken")
    with pytest.raises(RecursionError):
        json_codec.loads("[" * 100_000 + "]" * 100_000)


VALUES: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": "héllo 😀\u0000"}], "stream": True},
    [1, 2.5, None, "", {"k": [True, False]}],
]


@pytest.mark.parametrize("value", VALUES)
def test_what_it_writes_json_reads_back(value: Any) -> None:
    written = json_codec.dumps(value)
    assert json.loads(written) == value
    assert written == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [{"text": "a\ud800b"}, {"n": 2**70}, {1: "a key that is not a string"}],
)
def test_what_only_json_writes_is_written_by_json(value: Any) -> None:
    assert json_codec.dumps(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize("value", [{"a set": {1}}, {"text": "a\ud800b", "a set": {1}}])
def test_what_neither_writes_goes_through_default_as_in_json(value: Any) -> None:
    written = json_codec.dumps(value, default=sorted)
    assert written == json.dumps(value, separators=(",", ":"), default=sorted)
    with pytest.raises(TypeError):
        json_codec.dumps(value)


def test_a_float_that_json_would_write_as_nan_is_written_as_null() -> None:
    # The one difference on writing (no caller writes such a float: module docstring).
    assert json_codec.dumps([math.nan]) == "[null]"
