"""Model controls between proto and domain: generation settings and declared tools."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from agent_runtime.api.proto_values import to_struct
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.generation import GenerationConfig, ToolChoice, ToolChoiceMode
from agent_runtime.domain.tool_schemas import EMPTY_OBJECT_SCHEMA
from agent_runtime.domain.tools import ToolDefinition, declared_tool
from agent_runtime.v1 import model_controls_pb2 as mc

_TOOL_CHOICE_MODES = {
    mc.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    mc.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    mc.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
_TOOL_CHOICE_MODES_TO_PROTO = {value: key for key, value in _TOOL_CHOICE_MODES.items()}
_EXACT_INTEGERS = 2**53  # beyond, a double is no longer an exact whole number anyway


def generation_from_proto(config: mc.GenerationConfig) -> GenerationConfig:
    choice: ToolChoice | None = None
    match config.tool_choice.WhichOneof("choice"):
        case "tool_name":
            choice = ToolChoice.named(config.tool_choice.tool_name)
        case "mode" if config.tool_choice.mode in _TOOL_CHOICE_MODES:
            choice = ToolChoice(_TOOL_CHOICE_MODES[config.tool_choice.mode])
    return GenerationConfig(
        temperature=config.temperature if config.HasField("temperature") else None,
        top_p=config.top_p if config.HasField("top_p") else None,
        max_output_tokens=(
            config.max_output_tokens if config.HasField("max_output_tokens") else None
        ),
        stop=tuple(config.stop),
        seed=config.seed if config.HasField("seed") else None,
        reasoning_effort=config.reasoning_effort,
        tool_choice=choice,
    )


def generation_to_proto(config: GenerationConfig) -> mc.GenerationConfig:
    out = mc.GenerationConfig(
        temperature=config.temperature,
        top_p=config.top_p,
        max_output_tokens=config.max_output_tokens,
        stop=list(config.stop),
        seed=config.seed,
        reasoning_effort=config.reasoning_effort,
    )
    choice = config.tool_choice
    if choice is not None:
        if choice.mode is ToolChoiceMode.TOOL:
            out.tool_choice.tool_name = choice.tool_name
        else:
            out.tool_choice.mode = _TOOL_CHOICE_MODES_TO_PROTO[choice.mode]
    return out


def tools_from_proto(tools: Iterable[mc.ToolDefinition], field: str) -> tuple[ToolDefinition, ...]:
    """Declared tools as received (their checks are the use cases'); parameters as JSON, a
    whole-number double as an integer (a schema's "maxLength": 10 stays 10)."""
    declared = []
    for index, tool in enumerate(tools):
        if tool.HasField("parameters"):
            try:
                parameters = _whole_numbers(json_format.MessageToDict(tool.parameters))
            except ValueError as exc:  # NaN or Infinity: not JSON, so not a JSON Schema
                raise InvalidInput.field(f"{field}[{index}].parameters", str(exc)) from None
        else:
            parameters = dict(EMPTY_OBJECT_SCHEMA)
        declared.append(
            declared_tool(
                tool.name,
                tool.description,
                parameters,
                requires_approval=tool.requires_approval,
            )
        )
    return tuple(declared)


def tool_to_proto(tool: ToolDefinition) -> mc.ToolDefinition:
    out = mc.ToolDefinition(
        name=tool.name,
        description=tool.description,
        parameters=to_struct(tool.parameters),
    )
    if tool.requires_approval:
        out.requires_approval = True
    return out


def _whole_numbers(value: Any) -> Any:
    """google.protobuf.Struct holds every number as a double: give whole ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value
