"""The domain of issue 19's controls: generation settings and declared tools' schemas."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent_runtime.domain.argument_check import MAX_PROBLEMS, argument_problems
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.generation import GenerationConfig, ToolChoice, ToolChoiceMode
from agent_runtime.domain.tool_schemas import (
    MAX_SCHEMA_OBJECTS,
    check_beside_the_session,
    check_declared_tools,
    schema_bounds_problem,
    schema_problem,
)
from agent_runtime.domain.tools import TOOL_CATALOGUE, declared_tool

OBJECT = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


def test_settings_are_taken_field_by_field_from_the_first_that_sets_them() -> None:
    agent = GenerationConfig(temperature=0.1, max_output_tokens=500, stop=("A",), seed=1)
    session = GenerationConfig(temperature=0.0, top_p=0.5)  # 0.0 is set, not missing
    request = GenerationConfig(tool_choice=ToolChoice(ToolChoiceMode.REQUIRED))

    assert request.over(session).over(agent) == GenerationConfig(
        temperature=0.0,
        top_p=0.5,
        max_output_tokens=500,
        stop=("A",),
        seed=1,
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
    )
    assert GenerationConfig().over(agent) == agent
    assert GenerationConfig().is_empty and not session.is_empty


def test_out_of_range_values_are_each_a_field_violation() -> None:
    config = GenerationConfig(
        temperature=math.nan,
        top_p=1.5,
        max_output_tokens=0,
        stop=("", "x" * 300),
        seed=2**63,
        reasoning_effort="extreme",
        tool_choice=ToolChoice.named("no spaces allowed"),
    )

    with pytest.raises(InvalidInput) as caught:
        config.validate("generation")

    assert caught.value.reason == "INVALID_GENERATION_CONFIG"
    assert [v.field for v in caught.value.violations] == [
        "generation.temperature",
        "generation.top_p",
        "generation.max_output_tokens",
        "generation.stop[0]",
        "generation.stop[1]",
        "generation.seed",
        "generation.reasoning_effort",
        "generation.tool_choice.tool_name",
    ]
    GenerationConfig(temperature=2, top_p=1, max_output_tokens=1, seed=-(2**63)).validate("g")


def test_settings_read_back_as_stored() -> None:
    for config in (
        GenerationConfig(),
        GenerationConfig(temperature=0.0, stop=("a", "b"), reasoning_effort="low"),
        GenerationConfig(seed=-5, tool_choice=ToolChoice(ToolChoiceMode.NONE)),
        GenerationConfig(top_p=0.3, tool_choice=ToolChoice.named("ide_lint")),
    ):
        assert GenerationConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (OBJECT, None),
        ({"type": "object"}, None),
        ({}, None),  # any object: "type" may be left out
        (
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "definitions": {"p": {"type": "string"}},
                "properties": {"p": {"$ref": "#/definitions/p"}},
            },
            None,
        ),
        (
            {
                "type": "object",
                "$defs": {"p": {"type": "string"}},
                "properties": {"p": {"$ref": "#/$defs/p"}},
            },
            None,
        ),
        ({"type": "object", "default": {"$ref": "http://x"}}, None),  # data, not a reference
        ({"$schema": "http://example.com/mine", "type": "object"}, "unknown $schema"),
        ({"type": "objekt"}, "not a valid JSON Schema at $.type"),
        ({"type": "object", "properties": {"p": {"pattern": "("}}}, "is not a 'regex'"),
        ({"type": "string"}, "must describe an object"),
        ({"type": "object", "properties": {"p": {"$ref": "#/$defs/none"}}}, "does not resolve"),
        ({"type": "object", "properties": {"p": {"$ref": "other.json"}}}, "outside the schema"),
        ({"type": "object", "properties": {"p": {"$id": "sub", "type": "string"}}}, '"$id"'),
        ({"type": "object", "description": "x" * 70_000}, "bytes; at most"),
        ({"type": "object", "const": math.inf}, "not JSON"),
        ([], "must be a JSON object"),
    ],
)
def test_a_declared_schema_is_checked(schema: Any, problem: str | None) -> None:
    found = schema_problem(schema)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_a_schema_nested_too_deep_is_refused_without_recursing() -> None:
    schema: dict[str, Any] = {"type": "object"}
    node = schema
    for _ in range(5_000):  # deeper than Python's recursion limit
        child: dict[str, Any] = {"type": "object"}
        node["properties"] = {"x": child}
        node = child
    assert "nests deeper" in (schema_problem(schema) or "")


def test_a_schema_of_too_many_objects_is_refused_before_its_costly_check() -> None:
    at_the_bound = {"type": "object", "anyOf": [{} for _ in range(MAX_SCHEMA_OBJECTS - 1)]}
    past_it = {"type": "object", "anyOf": [{} for _ in range(MAX_SCHEMA_OBJECTS)]}
    assert schema_bounds_problem(at_the_bound) is None
    assert (
        schema_bounds_problem(past_it) == f"the schema has more than {MAX_SCHEMA_OBJECTS} objects"
    )


def test_declared_tools_are_checked_together_and_each_problem_names_its_tool() -> None:
    tools = (
        declared_tool("ok", "", OBJECT),
        declared_tool("write_file", "", OBJECT),
        declared_tool("ok", "", OBJECT),
        declared_tool("broken", "", {"type": 3}),
    )
    with pytest.raises(InvalidInput) as caught:
        check_declared_tools(tools, "tools", reserved=TOOL_CATALOGUE)
    assert caught.value.reason == "INVALID_TOOL_DEFINITION"
    assert [(v.field, v.description.split(":")[0]) for v in caught.value.violations] == [
        ("tools[3].parameters", "tool 'broken'"),
        ("tools[1].name", "tool 'write_file' is the name of a built-in tool"),
        ("tools[2].name", "tool 'ok' is declared twice"),
    ]
    with pytest.raises(InvalidInput, match="at most 128"):
        check_declared_tools(
            [declared_tool(f"t{i}", "", OBJECT) for i in range(129)], "tools", reserved=()
        )
    # 60 KiB each is a valid schema; five of them are more than a turn may carry.
    big = {"type": "object", "description": "x" * 60_000}
    large = [declared_tool(f"t{i}", "", big) for i in range(5)]
    with pytest.raises(InvalidInput, match=r"bytes .* at most 262144") as caught:
        check_declared_tools(large, "tools", reserved=())
    assert caught.value.reason == "INVALID_TOOL_DEFINITION"
    check_declared_tools(large[:2], "tools", reserved=())
    with pytest.raises(InvalidInput, match="at most 262144"):
        check_beside_the_session(large[:2], "tools", large[2:])
    with pytest.raises(InvalidInput, match="declared on the session already") as clash:
        check_beside_the_session(large[:1], "tools", large[:1])
    assert clash.value.reason == "TOOL_NAME_CLASH"


def test_a_schemas_validity_is_checked_last_once_all_else_passes() -> None:
    asked: list[dict[str, Any]] = []

    def validity(schema: dict[str, Any]) -> str | None:
        asked.append(schema)
        return "the validity's own problem" if schema.get("title") == "bad" else None

    # Five of 60 KiB: too large together, however valid each may be.
    big = [declared_tool(f"t{i}", "", {"description": "x" * 60_000}) for i in range(5)]
    with pytest.raises(InvalidInput, match="at most 262144"):
        check_declared_tools(big, "tools", reserved=(), validity=validity)
    with pytest.raises(InvalidInput, match="must be 1 to 64"):
        check_declared_tools(
            [declared_tool("bad name", "", OBJECT), declared_tool("t", "", OBJECT)],
            "tools",
            reserved=(),
            validity=validity,
        )
    assert asked == []

    bad = {"type": "object", "title": "bad"}
    tools = [declared_tool("ok", "", OBJECT), declared_tool("read_file", "", bad)]
    with pytest.raises(InvalidInput) as caught:
        check_declared_tools(tools, "tools", reserved=TOOL_CATALOGUE, validity=validity)
    assert asked == [OBJECT, bad]
    assert caught.value.reason == "INVALID_TOOL_DEFINITION"
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("tools[1].parameters", "tool 'read_file': the validity's own problem"),
        ("tools[1].name", "tool 'read_file' is the name of a built-in tool"),
    ]


def test_arguments_are_checked_against_the_schema_and_the_problems_bounded() -> None:
    lint = declared_tool(
        "lint",
        "",
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "items": {"type": "array", "items": {"type": "integer"}},
            },
            "additionalProperties": False,
        },
    )
    assert argument_problems(lint, {"n": 3.0}) == []  # a Struct's 3.0 is a whole number
    many = argument_problems(lint, {"items": ["x" * 10_000] * 50})
    assert len(many) == MAX_PROBLEMS
    assert all(len(problem) < 400 for problem in many)
    assert many[0].startswith("arguments.items[0]: ")
