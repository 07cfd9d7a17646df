"""How the model generates its answers: temperature, token limits, stop sequences, tool choice.

Every field is optional. A request's settings win over the session's, the session's over the
agent's, field by field (`over`); only the fields set in the end reach the model endpoint.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from agent_runtime.domain.errors import FieldViolation, InvalidInput

MAX_OUTPUT_TOKENS = 2**24  # as the usage counts the runtime accepts (untrusted_output.py)
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_INT64 = 2**63
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's function names


class ToolChoiceMode(Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    TOOL = "tool"  # the one named by ToolChoice.tool_name


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode
    tool_name: str = ""

    @classmethod
    def named(cls, tool_name: str) -> ToolChoice:
        return cls(ToolChoiceMode.TOOL, tool_name)


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    reasoning_effort: str = ""
    tool_choice: ToolChoice | None = None

    def over(self, base: GenerationConfig) -> GenerationConfig:
        """These settings, with `base`'s for the fields not set here."""
        if base.is_empty:
            return self
        if self.is_empty:
            return base
        values = {
            name: getattr(self, name) if _is_set(getattr(self, name)) else getattr(base, name)
            for name in _FIELD_NAMES
        }
        return GenerationConfig(**values)

    @property
    def is_empty(self) -> bool:
        return not any(_is_set(getattr(self, name)) for name in _FIELD_NAMES)

    def violations(self, prefix: str) -> list[FieldViolation]:
        """Every out-of-range value, as field violations under `prefix` (e.g. "generation")."""
        found: list[FieldViolation] = []

        def bad(name: str, description: str) -> None:
            found.append(FieldViolation(f"{prefix}.{name}", description))

        if self.temperature is not None and not (
            math.isfinite(self.temperature) and 0 <= self.temperature <= 2
        ):
            bad("temperature", f"must be between 0 and 2, not {self.temperature}")
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            bad("top_p", f"must be above 0 and at most 1, not {self.top_p}")
        if self.max_output_tokens is not None and not (
            1 <= self.max_output_tokens <= MAX_OUTPUT_TOKENS
        ):
            bad(
                "max_output_tokens",
                f"must be between 1 and {MAX_OUTPUT_TOKENS}, not {self.max_output_tokens}",
            )
        if len(self.stop) > MAX_STOP_SEQUENCES:
            bad("stop", f"must hold at most {MAX_STOP_SEQUENCES} sequences, not {len(self.stop)}")
        for index, sequence in enumerate(self.stop):
            if not 1 <= len(sequence) <= MAX_STOP_CHARS:
                bad(f"stop[{index}]", f"must be 1 to {MAX_STOP_CHARS} characters")
        if self.seed is not None and not -_INT64 <= self.seed < _INT64:
            bad("seed", "must be a 64-bit signed integer")
        if self.reasoning_effort and self.reasoning_effort not in REASONING_EFFORTS:
            known = ", ".join(REASONING_EFFORTS)
            bad("reasoning_effort", f"must be one of {known}, not '{self.reasoning_effort[:32]}'")
        choice = self.tool_choice
        if (
            choice is not None
            and choice.mode is ToolChoiceMode.TOOL
            and not TOOL_NAME_PATTERN.fullmatch(choice.tool_name)
        ):
            bad("tool_choice.tool_name", "must be 1 to 64 of [A-Za-z0-9_-]")
        return found

    def validate(self, prefix: str) -> None:
        """Raise InvalidInput (with every field violation) for out-of-range values."""
        found = self.violations(prefix)
        if found:
            raise InvalidInput(
                "; ".join(f"{v.field}: {v.description}" for v in found),
                violations=found,
                reason="INVALID_GENERATION_CONFIG",
            )

    # -- plain data, for storage and configuration files -----------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON-ready values."""
        data: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if not _is_set(value):
                continue
            if isinstance(value, ToolChoice):
                value = (
                    {"tool": value.tool_name}
                    if value.mode is ToolChoiceMode.TOOL
                    else {"mode": value.mode.value}
                )
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """The inverse of to_dict (for what this runtime stored; not a validator)."""
        choice = data.get("tool_choice")
        tool_choice = None
        if isinstance(choice, dict):
            tool_choice = (
                ToolChoice.named(str(choice["tool"]))
                if "tool" in choice
                else ToolChoice(ToolChoiceMode(choice["mode"]))
            )
        return cls(
            temperature=data.get("temperature"),
            top_p=data.get("top_p"),
            max_output_tokens=data.get("max_output_tokens"),
            stop=tuple(data.get("stop", ())),
            seed=data.get("seed"),
            reasoning_effort=data.get("reasoning_effort", ""),
            tool_choice=tool_choice,
        )


# Asked of every turn's settings several times: dataclasses.fields() builds a tuple a call.
_FIELD_NAMES = tuple(f.name for f in fields(GenerationConfig))


def _is_set(value: object) -> bool:
    return value is not None and value != "" and value != ()
