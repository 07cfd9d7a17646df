"""Checks tool arguments against the catalogue's JSON schemas.

The catalogue uses a small subset of JSON Schema (object, string, integer, boolean,
array of items, required, additionalProperties), so a small checker covers it exactly.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "string": (str,),
    "boolean": (bool,),
    "array": (list,),
}


def schema_problems(schema: dict[str, Any], value: Any, where: str = "arguments") -> list[str]:
    """Every way `value` breaks `schema`; empty when it conforms."""
    kind = schema.get("type")
    if kind == "integer":
        # Struct (protobuf) turns every number into a float: 3.0 is an acceptable integer.
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        return [] if ok else [f"{where} must be an integer"]
    if kind in _TYPES and not isinstance(value, _TYPES[kind]):
        return [f"{where} must be a{'n' if kind in ('object', 'array') else ''} {kind}"]
    problems: list[str] = []
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{where}.{name} is required")
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{name} is not a known argument")
    elif kind == "array" and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(schema["items"], item, f"{where}[{index}]")
    return problems
