"""The application layer never picks a tenant on its caller's behalf.

Every command, query and use-case entry point that acts for a tenant takes `tenant_id` as a
required argument: code that forgets it fails to construct or call, instead of silently
reading and writing the development-mode tenant's rows (fail closed).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import agent_runtime.application
from agent_runtime.application import commands


def _application_modules() -> Iterator[ModuleType]:
    package = agent_runtime.application
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        yield importlib.import_module(info.name)


def _tenant_parameters() -> Iterator[tuple[str, inspect.Parameter | dataclasses.Field[Any]]]:
    """Every `tenant_id` parameter or dataclass field defined in the application layer."""
    for module in _application_modules():
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere: checked where it is defined
            where = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                if dataclasses.is_dataclass(obj):
                    for f in dataclasses.fields(obj):
                        if f.name == "tenant_id":
                            yield where, f
                members = [
                    (f"{where}.{attr}", value)
                    for attr, value in vars(obj).items()
                    if inspect.isfunction(value)
                ]
            elif inspect.isfunction(obj):
                members = [(where, obj)]
            else:
                continue
            for qualified, function in members:
                parameter = inspect.signature(function).parameters.get("tenant_id")
                if parameter is not None:
                    yield qualified, parameter


def _has_default(spec: inspect.Parameter | dataclasses.Field[Any]) -> bool:
    """A default tenant; None ("no tenant", e.g. log_context.bind's) picks none and is allowed."""
    if isinstance(spec, inspect.Parameter):
        return spec.default not in (inspect.Parameter.empty, None)
    return spec.default not in (dataclasses.MISSING, None) or (
        spec.default_factory is not dataclasses.MISSING
    )


def test_no_application_level_tenant_id_has_a_default() -> None:
    found = dict(_tenant_parameters())
    # The walk does find them (a walk that found nothing would pass vacuously).
    assert "agent_runtime.application.commands.SendUserMessage" in found
    assert "agent_runtime.application.session_queries.SessionQueries.get" in found
    assert "agent_runtime.application.turn_streams.TurnStreams.follow" in found
    defaulted = sorted(where for where, spec in found.items() if _has_default(spec))
    assert defaulted == []


# Values carried inside a command (the command has the tenant), not commands themselves.
PARTS_OF_COMMANDS = {commands.ListedGrant}
COMMANDS: list[type[Any]] = [
    obj
    for obj in vars(commands).values()
    if inspect.isclass(obj)
    and dataclasses.is_dataclass(obj)
    and obj.__module__ == commands.__name__
    and obj not in PARTS_OF_COMMANDS
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.__name__)
def test_a_command_without_a_tenant_does_not_construct(command: type[Any]) -> None:
    required = {
        f.name: "x"
        for f in dataclasses.fields(command)
        if f.name != "tenant_id"
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    }
    assert command(**required, tenant_id="acme").tenant_id == "acme"
    with pytest.raises(TypeError, match="tenant_id"):
        command(**required)
