"""A tool call's arguments as the workspace's tools read them: each of the type the tool
expects, or a ToolRefused that the model reads as the call's tool error."""

from __future__ import annotations

from typing import Any


class ToolRefused(Exception):
    """The call cannot run as asked; the message is what the model is told."""


_MISSING: Any = object()


def text_arg(args: dict[str, Any], name: str, default: str = _MISSING) -> str:
    """A string argument; without `default`, one the call must have."""
    value = args.get(name, default)
    if value is _MISSING:
        raise ToolRefused(f"missing argument {name!r}")
    if not isinstance(value, str):
        raise ToolRefused(f"argument {name!r} must be a string")
    return value


def int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolRefused(f"argument {name!r} must be an integer")
    return value


def bool_arg(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise ToolRefused(f"argument {name!r} must be true or false")
    return value
