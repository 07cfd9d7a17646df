"""The model's arguments checked against a tool's JSON Schema, in bounded time.

A declared schema comes from a client, which may be hostile, and the check runs on the
server's event loop: it must end, whatever the schema and the arguments. So it runs on
jsonschema's validators extended (`jsonschema.validators.extend`) so that:
- every keyword first looks at the check's deadline (ARGUMENT_CHECK_SECONDS): a schema whose
  applicators and references multiply the work (anyOf in anyOf, through "$ref", over nested
  arguments) stops there;
- "pattern", "patternProperties" and "additionalProperties" (which matches the names of
  "patternProperties") match with `regex` within what is left of that time, where jsonschema
  would use Python's `re`, which backtracks without end (schema_patterns.py);
- "uniqueItems" compares the items in linear time (jsonschema compares unsortable ones
  pairwise).
A check past its deadline is a tool error for the model ("argument check timed out"), as
arguments that break the schema are. "format" is an annotation here, as the spec says (no
format checker): a "format": "regex" string is never compiled.

Two things jsonschema would do with `re` all the same are refused (`unbounded_feature`), when
a tool is declared and before each check: "$schema" below the root (jsonschema validates
such a subschema with the stock validator of that draft), and "unevaluatedProperties" in a
schema with "patternProperties" (it matches them itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import islice
from typing import Any, Protocol

from jsonschema import (
    Draft3Validator,
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    ValidationError,
)
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from referencing.exceptions import Unresolvable

from agent_runtime.domain.schema_patterns import UnusablePattern, compiled_pattern
from agent_runtime.domain.tools import ToolDefinition

# The time one check of a call's arguments may take. A check of real arguments against a real
# schema takes well under a millisecond; this much pins the event loop at most once per call.
ARGUMENT_CHECK_SECONDS = 0.1
MAX_PROBLEMS = 5  # argument problems told to the model, at most
_MAX_PROBLEM_CHARS = 300  # a message quotes the offending value: bounded
_DRAFT: type[Validator] = Draft202012Validator


class _Validating(Protocol):
    """What a keyword is handed: the validator of the schema it is in."""

    def is_type(self, instance: Any, type: str) -> bool: ...

    def descend(
        self, instance: Any, schema: Any, path: str | None = None, schema_path: str | None = None
    ) -> Iterator[ValidationError]: ...


_Keyword = Callable[[_Validating, Any, Any, dict[str, Any]], Iterable[ValidationError] | None]


class ArgumentCheckTimedOut(Exception):
    """The check of a call's arguments ran past its deadline."""


_deadline: ContextVar[float] = ContextVar("argument_check_deadline")


def argument_problems(tool: ToolDefinition, arguments: dict[str, Any]) -> list[str]:
    """How `arguments` break the tool's schema (at most MAX_PROBLEMS); empty when they fit."""
    schema = tool.parameters
    if (feature := unbounded_feature(schema)) is not None:
        return [f"the tool's schema cannot be used: {feature}"]
    cls: type[Validator] = validator_for(schema, default=_DRAFT)
    validator = _BOUNDED.get(cls, _BOUNDED[_DRAFT])(schema)
    try:
        with _within(ARGUMENT_CHECK_SECONDS):
            errors = list(islice(validator.iter_errors(arguments), MAX_PROBLEMS))
    except ArgumentCheckTimedOut:
        return [
            f"argument check timed out: checking these arguments against the tool's schema "
            f"took over {ARGUMENT_CHECK_SECONDS} s (its patterns, or its references)"
        ]
    except (Unresolvable, UnusablePattern) as exc:  # declared ones are checked, built-in fine
        return [f"the tool's schema cannot be used: {bounded(str(exc))}"]
    except RecursionError:
        return ["the tool's schema cannot be used: it refers to itself without end"]
    return [_describe(error) for error in errors]


def unbounded_feature(schema: dict[str, Any]) -> str | None:
    """What in `schema` the check could not keep bounded (see the module's docstring); None
    when there is nothing. Looks at every object in the schema, data such as "default"
    included: a "$ref" may point anywhere in it."""
    keywords: set[str] = set(schema)
    pending: list[object] = list(schema.values())
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "$schema" in node:
                return '"$schema" is allowed only at the root of the schema'
            keywords.update(node)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    if {"unevaluatedProperties", "patternProperties"} <= keywords:
        return '"unevaluatedProperties" cannot be used with "patternProperties"'
    return None


def bounded(text: str) -> str:
    return text if len(text) <= _MAX_PROBLEM_CHARS else f"{text[: _MAX_PROBLEM_CHARS - 3]}..."


@contextmanager
def _within(seconds: float) -> Iterator[None]:
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _time_left() -> float:
    left = _deadline.get() - time.monotonic()
    if left <= 0:
        raise ArgumentCheckTimedOut
    return left


def _matches(pattern: str, text: str) -> bool:
    compiled = compiled_pattern(pattern)
    try:
        return compiled.search(text, timeout=_time_left()) is not None
    except TimeoutError as exc:
        raise ArgumentCheckTimedOut from exc


def _pattern(
    validator: _Validating, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: _Validating, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _matches(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: _Validating, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        name
        for name in instance
        if name not in properties and not any(_matches(p, name) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(pattern) for pattern in sorted(patterns))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({names} {verb} unexpected)"
            )


def _unique_items(
    validator: _Validating, unique: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not (unique and validator.is_type(instance, "array")):
        return
    first_of: dict[Any, int] = {}
    for index, item in enumerate(instance):
        first = first_of.setdefault(_equality_key(item), index)
        if first != index:  # said without quoting the array, which may be long
            yield ValidationError(f"has non-unique elements: items {first} and {index} are equal")
            return


def _equality_key(value: Any) -> Any:
    """A hashable key equal for JSON values jsonschema holds equal: 1 and 1.0 are, true and 1
    are not, objects regardless of their keys' order. (The arguments nest at most 20 deep.)"""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, dict):
        return ("object", frozenset((k, _equality_key(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_equality_key(item) for item in value))
    return (type(value).__name__, value)


def _on_time(keyword: _Keyword) -> _Keyword:
    def checked(
        validator: _Validating, value: Any, instance: Any, schema: dict[str, Any]
    ) -> Iterable[ValidationError] | None:
        _time_left()
        return keyword(validator, value, instance, schema)

    return checked


_REPLACED: dict[str, _Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}


def _bounded_class(cls: type[Validator]) -> type[Validator]:
    keywords = {**cls.VALIDATORS, **{k: v for k, v in _REPLACED.items() if k in cls.VALIDATORS}}
    bounded_class: type[Validator] = extend(  # type: ignore[no-untyped-call]  # untyped stub
        cls, {name: _on_time(keyword) for name, keyword in keywords.items()}
    )
    return bounded_class


# Every draft validator_for may answer for a schema's "$schema" (an unknown one is refused
# when declared).
_BOUNDED: dict[type[Validator], type[Validator]] = {
    cls: _bounded_class(cls)
    for cls in (
        Draft3Validator,
        Draft4Validator,
        Draft6Validator,
        Draft7Validator,
        Draft201909Validator,
        Draft202012Validator,
    )
}


def _describe(error: ValidationError) -> str:
    path = "arguments" + "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    )
    return f"{path}: {bounded(error.message)}"
