"""Reading a settings model from its AGENT_RUNTIME_* variables (pydantic-settings), and
saying on one line which variables are wrong, with their values (never a secret's) and what
is allowed."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeVar, get_args

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A setting has a value the runtime cannot use; the message names the setting."""


@dataclass(frozen=True)
class Env:
    """A concern's variables are AGENT_RUNTIME_<prefix><FIELD>. `empty_is_error`: one set to
    "" stops start-up instead of meaning unset (unset would switch a safeguard off)."""

    prefix: str
    empty_is_error: bool = False

    def variable(self, field: str) -> str:
        return f"AGENT_RUNTIME_{self.prefix}{field}".upper()

    def read(self, model: type[M], overrides: Mapping[str, str]) -> M:
        """`model` from its variables; `overrides` (variables by name) win over the process
        environment. ConfigError names each variable that is wrong."""
        environ = {name.upper(): value for name, value in os.environ.items()} | dict(overrides)
        raw = {field: environ.get(self.variable(field)) for field in model.model_fields}
        if self.empty_is_error:
            for field, value in raw.items():
                if value is not None and not value.strip():
                    raise ConfigError(
                        f"{self.variable(field)} is set but empty: give it a value, or unset it"
                    )
        given = {f: overrides[self.variable(f)] for f in raw if self.variable(f) in overrides}
        try:
            read = _source(model, self)(**{f: v for f, v in given.items() if v != ""})
        except ValidationError as exc:
            raise ConfigError("; ".join(_problems(exc, model, self, raw))) from None
        return model.model_validate({field: getattr(read, field) for field in model.model_fields})


# Clearer than pydantic's words for what a variable's text may be.
_ALLOWED = {
    "bool_parsing": "must be true or false",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
}


@cache
def _source(model: type[M], env: Env) -> type[M]:
    class FromEnvironment(model, BaseSettings):  # type: ignore[valid-type,misc]
        # Empty means unset (unless empty_is_error: Env.read refuses it first); decoding off:
        # a field parses its own text (JSON headers, key=tenant lists).
        model_config = SettingsConfigDict(
            env_prefix=f"AGENT_RUNTIME_{env.prefix}",
            env_ignore_empty=True,
            enable_decoding=False,
            extra="forbid",
        )

    return FromEnvironment


def _problems(
    exc: ValidationError, model: type[BaseModel], env: Env, raw: Mapping[str, str | None]
) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        message = _ALLOWED.get(error["type"]) or error["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "must be")
        if not error["loc"]:  # a rule across fields: its message names the variables
            yield message
            continue
        field = str(error["loc"][0])
        info = model.model_fields[field]
        secret = not info.repr or SecretStr in (info.annotation, *get_args(info.annotation))
        shown = "" if secret else f"={raw.get(field) or error['input']!r}"
        yield f"{env.variable(field)}{shown}: {message}"
