"""JSON Schemas of tool arguments, with jsonschema: the checks of the tools a client declares
(names, sizes, and the schema itself), and of the model's arguments against a tool's schema.

Schemas are JSON Schema Draft 2020-12 unless their "$schema" names another draft jsonschema
knows (MCP servers often still write draft-07). Nothing is ever fetched: a "$ref" must point
inside the schema. A declared schema is bounded in size and depth, since a client may be
hostile: it is stored with the session and checked against every call of the tool, in
bounded time (argument_check.py); its patterns are bounded when declared (schema_patterns.py).

Checking a schema's validity (schema_validity_problem) is the costly part: jsonschema checks
it against its draft's metaschema, about 0.2 ms per subschema with Draft 2020-12, seconds for
64 KiB of them. So it comes last, once all that costs little passes (names, descriptions, each
schema's size and depth, the tools' count and size together): a declaration checks at most
MAX_DECLARED_TOOLS_BYTES of schemas. Where that check runs is the application's business
(application/declared_tools.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, cast

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from agent_runtime.domain.argument_check import bounded, unbounded_feature
from agent_runtime.domain.errors import FieldViolation, InvalidInput
from agent_runtime.domain.generation import TOOL_NAME_PATTERN
from agent_runtime.domain.schema_patterns import pattern_problem
from agent_runtime.domain.tools import ToolDefinition

MAX_DECLARED_TOOLS = 128  # a session's and a request's together (OpenAI's limit per request)
MAX_DESCRIPTION_CHARS = 4096
MAX_SCHEMA_BYTES = 64 * 1024  # one tool's schema, as compact JSON
# All declared tools of a turn (the session's and the request's): names, descriptions and
# schemas. They are stored with the session, shown by GetSession and sent with every call.
MAX_DECLARED_TOOLS_BYTES = 256 * 1024
# Objects and arrays inside one another: as the model's arguments may nest (untrusted_output.py).
MAX_SCHEMA_DEPTH = 20
# Objects in one schema: checking costs about 0.2 ms per object, so this bounds a declared
# schema's check to about a second of CPU (64 KiB of "{}" would be 20,000 of them). An
# ordinary tool's schema has tens.
MAX_SCHEMA_OBJECTS = 4096
_ROOT = "urn:agent-runtime:tool-schema"
# validator_for's answer for a "$schema" it does not know.
_UNKNOWN_DRAFT = cast(type[Validator], object())
_DRAFT: type[Validator] = Draft202012Validator

EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# Why a schema (within its bounds: schema_bounds_problem) is not a valid one; None if it is.
ValidityCheck = Callable[[dict[str, Any]], str | None]


def check_declared_tools(
    tools: Sequence[ToolDefinition],
    field: str,
    *,
    reserved: Collection[str],
    validity: ValidityCheck | None = None,
) -> None:
    """Raise InvalidInput naming each tool that cannot be declared: a bad name, description
    or schema, or too many or too large together (INVALID_TOOL_DEFINITION); a name that is a
    built-in tool's (`reserved`) or another's in the list (TOOL_NAME_CLASH).

    Each schema's validity, the costly part, is checked (by `validity`, by default
    schema_validity_problem) last, only when all else passes: the tools are then at most
    MAX_DECLARED_TOOLS_BYTES together."""
    clashes: list[FieldViolation] = []
    problems: list[FieldViolation] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"{field}[{index}]"
        shown = tool.name[:64]
        if not TOOL_NAME_PATTERN.fullmatch(tool.name):
            problems.append(
                FieldViolation(f"{where}.name", f"tool '{shown}': must be 1 to 64 of [A-Za-z0-9_-]")
            )
            continue
        if tool.name in reserved:
            clashes.append(
                FieldViolation(f"{where}.name", f"tool '{shown}' is the name of a built-in tool")
            )
        elif tool.name in seen:
            clashes.append(FieldViolation(f"{where}.name", f"tool '{shown}' is declared twice"))
        seen.add(tool.name)
        if len(tool.description) > MAX_DESCRIPTION_CHARS:
            problems.append(
                FieldViolation(
                    f"{where}.description",
                    f"tool '{shown}': at most {MAX_DESCRIPTION_CHARS} characters",
                )
            )
        if (problem := schema_bounds_problem(tool.parameters)) is not None:
            problems.append(FieldViolation(f"{where}.parameters", f"tool '{shown}': {problem}"))
    if not problems:
        problems += _too_many(tools, field)
    if not problems:
        check = validity or schema_validity_problem
        for index, tool in enumerate(tools):
            if (problem := check(tool.parameters)) is not None:
                problems.append(
                    FieldViolation(f"{field}[{index}].parameters", f"tool '{tool.name}': {problem}")
                )
    _raise(problems + clashes, "INVALID_TOOL_DEFINITION" if problems else "TOOL_NAME_CLASH")


def check_beside_the_session(
    tools: Sequence[ToolDefinition], field: str, session_tools: Sequence[ToolDefinition]
) -> None:
    """Raise InvalidInput for a request's tools (checked already by check_declared_tools)
    that the session declares too (TOOL_NAME_CLASH), or that are too many or too large with
    the session's (INVALID_TOOL_DEFINITION)."""
    if not tools:
        return
    taken = {tool.name for tool in session_tools}
    _raise(
        [
            FieldViolation(
                f"{field}[{index}].name", f"tool '{tool.name}' is declared on the session already"
            )
            for index, tool in enumerate(tools)
            if tool.name in taken
        ],
        "TOOL_NAME_CLASH",
    )
    _raise(_too_many((*session_tools, *tools), field), "INVALID_TOOL_DEFINITION")


def _too_many(tools: Sequence[ToolDefinition], field: str) -> list[FieldViolation]:
    together = "(the session's and the request's together)"
    if len(tools) > MAX_DECLARED_TOOLS:
        return [
            FieldViolation(
                field,
                f"at most {MAX_DECLARED_TOOLS} tools may be declared {together}, not {len(tools)}",
            )
        ]
    size = sum(
        len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters)) for tool in tools
    )
    if size > MAX_DECLARED_TOOLS_BYTES:
        return [
            FieldViolation(
                field,
                f"the declared tools take {size} bytes {together}; "
                f"at most {MAX_DECLARED_TOOLS_BYTES}",
            )
        ]
    return []


def _raise(violations: list[FieldViolation], reason: str) -> None:
    if violations:
        raise InvalidInput(
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=violations,
            reason=reason,
        )


def schema_problem(schema: object) -> str | None:
    """Why `schema` cannot be a declared tool's parameters; None when it can."""
    if (problem := schema_bounds_problem(schema)) is not None:
        return problem
    return schema_validity_problem(cast(dict[str, Any], schema))


def schema_bounds_problem(schema: object) -> str | None:
    """What little costs to check of a schema: an object, JSON, at most MAX_SCHEMA_DEPTH deep
    and MAX_SCHEMA_BYTES long. None when it is, and may be checked further."""
    if not isinstance(schema, dict):
        return "the schema must be a JSON object"
    depth, objects = _shape(schema)
    if depth > MAX_SCHEMA_DEPTH:
        return f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
    if objects > MAX_SCHEMA_OBJECTS:
        return f"the schema has more than {MAX_SCHEMA_OBJECTS} objects"
    try:
        size = len(json.dumps(schema, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:  # NaN or Infinity, which JSON cannot hold
        return f"the schema is not JSON: {exc}"
    if size > MAX_SCHEMA_BYTES:
        return f"the schema is {size} bytes; at most {MAX_SCHEMA_BYTES}"
    return None


def schema_validity_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema`, within its bounds (schema_bounds_problem), is not a valid JSON Schema of
    a tool's parameters; None when it is. Costly: see the module's docstring."""
    cls = validator_for(schema, default=_UNKNOWN_DRAFT if "$schema" in schema else _DRAFT)
    if cls is _UNKNOWN_DRAFT:
        return f"unknown $schema '{str(schema.get('$schema'))[:100]}' (use Draft 2020-12)"
    try:
        cls.check_schema(schema)  # its format checker also checks every "pattern" compiles
    except SchemaError as exc:
        return f"not a valid JSON Schema at {exc.json_path}: {bounded(exc.message)}"
    if schema.get("type", "object") != "object":
        return 'the schema must describe an object ("type": "object")'
    return unbounded_feature(schema) or _subschema_problem(schema)


def _subschema_problem(schema: dict[str, Any]) -> str | None:
    """Every "$ref" points inside the schema and resolves; no embedded resource ("$id"
    below the root) changes what "#" means; every pattern can be matched in bounded time and
    memory. Only subschemas are looked at (the draft's own keywords say which), not data such
    as "default" or "enum" values."""
    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = Registry().with_resource(_ROOT, root).resolver(base_uri=_ROOT)
    pending = list(root.subresources())
    for resource in (root, *_all(pending)):
        contents = resource.contents
        if not isinstance(contents, dict):
            continue
        if resource is not root and "$id" in contents:
            return '"$id" is allowed only at the root of the schema'
        for key in ("$ref", "$dynamicRef"):
            value = contents.get(key)
            if not isinstance(value, str):
                continue
            if not value.startswith("#"):
                return f"{key} '{value[:100]}' points outside the schema (nothing is fetched)"
            if key == "$ref":
                try:
                    resolver.lookup(value)
                except Unresolvable:
                    return f"$ref '{value[:100]}' does not resolve within the schema"
        if (problem := _patterns_problem(contents)) is not None:
            return problem
    return None


def _patterns_problem(subschema: dict[str, Any]) -> str | None:
    pattern = subschema.get("pattern")
    patterns = [pattern] if isinstance(pattern, str) else []
    named = subschema.get("patternProperties")
    patterns += list(named) if isinstance(named, dict) else []
    return next(filter(None, map(pattern_problem, patterns)), None)


def _all(pending: list[Resource[Any]]) -> Iterator[Resource[Any]]:
    while pending:
        resource = pending.pop()
        yield resource
        pending.extend(resource.subresources())


def _shape(node: object) -> tuple[int, int]:
    """How deep objects and arrays nest, and how many objects there are, each counted up to
    just past its bound (iterative: a hostile schema is not recursed)."""
    deepest = objects = 0
    pending: list[tuple[object, int]] = [(node, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if isinstance(item, dict):
                objects += 1
            if deepest > MAX_SCHEMA_DEPTH or objects > MAX_SCHEMA_OBJECTS:
                break
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest, objects
