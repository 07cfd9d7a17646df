"""A hostile client's schema cannot pin the event loop: the model's arguments are checked in
bounded time and memory, whatever the schema (domain/argument_check.py, schema_patterns.py).

The patterns here are real catastrophic ones: with Python's `re`, ^(a|aa)+$ against 60 a's and
a "b" would backtrack for hours. Each test ends only because the check stops itself."""

from __future__ import annotations

from typing import Any

import pytest

from agent_runtime.domain.argument_check import argument_problems
from agent_runtime.domain.schema_patterns import MAX_PATTERN_COST, pattern_cost, pattern_problem
from agent_runtime.domain.tool_schemas import schema_problem
from agent_runtime.domain.tools import declared_tool

CATASTROPHIC = "^(a|aa)+$"
HOSTILE_TEXT = "a" * 60 + "b"
TIMED_OUT = "argument check timed out"


def problems(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    return argument_problems(declared_tool("t", "", schema), arguments)


def nested(key: str, depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node[key] = {}
        node = node[key]
    return root


@pytest.mark.parametrize(
    ("schema", "arguments"),
    [
        pytest.param(
            {"type": "object", "properties": {"s": {"type": "string", "pattern": CATASTROPHIC}}},
            {"s": HOSTILE_TEXT},
            id="pattern",
        ),
        pytest.param(
            {"type": "object", "patternProperties": {CATASTROPHIC: {"type": "string"}}},
            {HOSTILE_TEXT: 1},
            id="patternProperties",
        ),
        pytest.param(
            {"patternProperties": {CATASTROPHIC: {}}, "additionalProperties": False},
            {HOSTILE_TEXT: 1},
            id="additionalProperties beside patternProperties",
        ),
        pytest.param(
            {"propertyNames": {"pattern": CATASTROPHIC}}, {HOSTILE_TEXT: 1}, id="propertyNames"
        ),
        pytest.param(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "definitions": {"p": {"pattern": CATASTROPHIC}},
                "properties": {"s": {"$ref": "#/definitions/p"}},
            },
            {"s": HOSTILE_TEXT},
            id="draft-07 through a $ref",
        ),
        pytest.param(
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "properties": {"s": {"anyOf": [{"pattern": CATASTROPHIC}]}},
            },
            {"s": HOSTILE_TEXT},
            id="draft-04 in anyOf",
        ),
        pytest.param(
            {"x-data": {"pattern": CATASTROPHIC}, "properties": {"s": {"$ref": "#/x-data"}}},
            {"s": HOSTILE_TEXT},
            id="a $ref into data no declaration check looks at",
        ),
        pytest.param(
            {
                "$defs": {
                    "n": {
                        "anyOf": [
                            {"properties": {"a": {"$ref": "#/$defs/n"}}, "required": [key]}
                            for key in ("x", "y", "z")
                        ]
                    }
                },
                "properties": {"a": {"$ref": "#/$defs/n"}},
            },
            nested("a", 19),
            id="anyOf through $ref: 3^19 branches over nested arguments",
        ),
    ],
)
def test_a_check_that_would_not_end_is_a_tool_error_for_the_model(
    schema: dict[str, Any], arguments: dict[str, Any]
) -> None:
    assert schema_problem(schema) is None  # nothing to refuse by looking at it
    (problem,) = problems(schema, arguments)
    assert problem.startswith(TIMED_OUT)


def test_patterns_still_match_as_json_schema_says() -> None:
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string", "pattern": r"\.py$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert problems(schema, {"path": "src/main.py", "x-retries": 3}) == []
    assert problems(schema, {"path": "notes.txt", "x-retries": "3", "other": 1}) == [
        "arguments.path: 'notes.txt' does not match '\\\\.py$'",
        "arguments.x-retries: '3' is not of type 'integer'",
        "arguments: 'other' does not match any of the regexes: '^x-'",
    ]
    assert problems({"additionalProperties": False}, {"a": 1, "b": 2}) == [
        "arguments: Additional properties are not allowed ('a', 'b' were unexpected)"
    ]
    # The catastrophic pattern is fine against text it matches or rejects at once.
    assert problems({"properties": {"s": {"pattern": CATASTROPHIC}}}, {"s": "aaaa"}) == []


@pytest.mark.parametrize(
    ("items", "duplicates"),
    [
        ([{"a": 1, "b": [1]}, {"b": [1.0], "a": 1}], (0, 1)),  # keys in any order, 1 == 1.0
        ([1, True, 0, False, None, "1"], None),  # true is not 1, false is not 0
        ([[1, 2], [2, 1], {"1": 2}], None),
        ([{"x": i} for i in range(20_000)], None),  # jsonschema compares these pairwise
        ([{"x": i} for i in range(20_000)] + [{"x": 7}], (7, 20_000)),
    ],
)
def test_unique_items_are_compared_as_json_values_in_linear_time(
    items: list[Any], duplicates: tuple[int, int] | None
) -> None:
    found = problems({"properties": {"a": {"uniqueItems": True}}}, {"a": items})
    if duplicates is None:
        assert found == []
    else:
        first, second = duplicates
        assert found == [
            f"arguments.a: has non-unique elements: items {first} and {second} are equal"
        ]


@pytest.mark.parametrize(
    ("pattern", "cost"),
    [
        ("^[a-z]+$", 3),
        (r"^[0-9a-f]{64}$", 66),
        (r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", 38),
        ("(?:a{100}){100}", 10_100),  # nested repetitions multiply
        ("(?:a{65535}){65535}", 4_294_901_760),
        ("x{0,65535}x{1,65535}", 2),  # only what must be repeated is written out
        ("[{]{1000}", 1000),  # a class is one item, braces in it none
        (r"\{1000}", 6),  # an escaped brace repeats nothing
        (r"[\]{]a{5}", 6),
        ("(a|b){3000}", 6000),  # both sides of an alternation count
        ("(?i)a{2}", 3),
        ("(?x)a {1000}", None),  # verbose: the repetition would hide behind the space
        ("(?ix:a)", None),
        (r"\(?x)", 3),  # an escaped parenthesis opens no flag group
        ("[(?x)]", 1),
    ],
)
def test_a_patterns_cost_counts_its_repetitions_written_out(pattern: str, cost: int | None) -> None:
    assert pattern_cost(pattern) == cost


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("a{1001}", f"make 1001 items; at most {MAX_PATTERN_COST}"),
        ("(?:a{65535}){65535}", "repeats too much"),  # compiled, it would take 600 GB
        ("(?x)a", "the x (verbose) flag is not supported"),
    ],
)
def test_a_pattern_that_would_cost_too_much_is_refused_when_declared_and_when_used(
    pattern: str, says: str
) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and says in problem
    declared = schema_problem({"properties": {"s": {"pattern": pattern}}})
    assert declared is not None and says in declared
    # A "$ref" into data reaches it past the declaration check: refused before compiling.
    (used,) = problems(
        {"x": {"pattern": pattern}, "properties": {"s": {"$ref": "#/x"}}}, {"s": "a"}
    )
    assert used.startswith("the tool's schema cannot be used") and says in used


def test_a_pattern_that_does_not_compile_is_a_tool_error_when_used() -> None:
    (used,) = problems({"x": {"pattern": "("}, "properties": {"s": {"$ref": "#/x"}}}, {"s": "a"})
    assert used.startswith("the tool's schema cannot be used: pattern '(' cannot be compiled")


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (
            {"properties": {"s": {"$schema": "http://json-schema.org/draft-07/schema#"}}},
            '"$schema" is allowed only at the root of the schema',
        ),
        (
            {"patternProperties": {"^a": {}}, "unevaluatedProperties": False},
            '"unevaluatedProperties" cannot be used with "patternProperties"',
        ),
    ],
)
def test_what_jsonschema_would_match_with_re_is_refused(schema: dict[str, Any], says: str) -> None:
    assert schema_problem(schema) == says
    assert problems(schema, {"a": 1}) == [f"the tool's schema cannot be used: {says}"]


def test_a_schema_that_refers_to_itself_without_end_is_a_tool_error() -> None:
    schema = {"type": "object", "allOf": [{"$ref": "#"}]}
    assert problems(schema, {}) == [
        "the tool's schema cannot be used: it refers to itself without end"
    ]
    # Recursion that follows the arguments ends with them.
    assert problems({"additionalProperties": {"$ref": "#"}}, nested("a", 100)) == []


def test_format_is_an_annotation_a_regex_argument_is_never_compiled() -> None:
    schema = {"properties": {"r": {"type": "string", "format": "regex"}}}
    assert problems(schema, {"r": "(unclosed"}) == []
    assert problems(schema, {"r": "(?:a{65535}){65535}"}) == []  # compiled, 600 GB
