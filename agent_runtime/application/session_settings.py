"""What a client sets on a session (title, instructions, agent, declared tools, generation
defaults): the checks it passes, and UpdateSession's update mask (AIP-134)."""

from __future__ import annotations

import dataclasses

from agent_runtime.application.commands import UpdateSession
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.errors import FieldViolation, InvalidInput
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Session
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tool_schemas import check_declared_tools

GENERATION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationConfig))
# What UpdateSession may change; "*" is all of them.
UPDATABLE = ("title", "instructions", "agent", "tools", "generation")
# The session's other fields: the server sets them.
OUTPUT_ONLY = (
    "session_id",
    "message_count",
    "running_turn_id",
    "created_at",
    "last_activity_at",
    "agent_history",
    "pending_approvals_count",
)


class SessionSettings:
    def __init__(
        self, agents: AgentCatalogue, tools: ToolFilterService, *, max_instructions_bytes: int
    ) -> None:
        self._agents = agents
        self._tools = tools
        self._max_instructions = max_instructions_bytes

    def check(self, session: Session, prefix: str = "") -> None:
        """Raise InvalidInput for settings the session cannot have; field names start with
        `prefix` (e.g. "session." for UpdateSession)."""
        size = len(session.instructions.encode("utf-8", "surrogatepass"))
        if size > self._max_instructions:
            raise InvalidInput.field(
                f"{prefix}instructions",
                f"is {size} bytes; the limit is {self._max_instructions}",
                reason="MESSAGE_TOO_LARGE",
            )
        check_declared_tools(session.tools, f"{prefix}tools", reserved=self._tools.builtin_names)
        session.generation.validate(f"{prefix}generation")
        choice = session.generation.tool_choice
        if choice is not None and choice.mode is ToolChoiceMode.TOOL:
            agent = self._agents.get(session.agent)
            offered = {tool.name for tool in self._tools.tools_for(agent, session.tools)}
            if choice.tool_name not in offered:
                raise InvalidInput.field(
                    f"{prefix}generation.tool_choice.tool_name",
                    f"tool '{choice.tool_name}' is not offered to agent '{agent.name}' "
                    "(neither its built-in tools nor the session's)",
                    reason="INVALID_GENERATION_CONFIG",
                )

    def updated(self, session: Session, cmd: UpdateSession) -> Session:
        """A copy of `session` with the fields of the update mask set from `cmd`, checked.
        Raises InvalidInput for a path the mask may not name (INVALID_UPDATE_MASK)."""
        paths = update_paths(cmd.paths)
        changed = dataclasses.replace(session)
        if "title" in paths:
            changed.title = cmd.title
        if "instructions" in paths:
            changed.instructions = cmd.instructions
        if "agent" in paths:
            try:
                changed.agent = self._agents.get(cmd.agent).name  # empty: the default agent
            except InvalidInput as exc:
                raise InvalidInput.field(
                    "session.agent", exc.violations[0].description, reason=exc.reason
                ) from None
        if "tools" in paths:
            changed.tools = cmd.tools
        if "generation" in paths:
            changed.generation = cmd.generation
        else:
            picked = {
                name: getattr(cmd.generation, name)
                for name in GENERATION_FIELDS
                if f"generation.{name}" in paths
            }
            if picked:
                changed.generation = dataclasses.replace(changed.generation, **picked)
        self.check(changed, "session.")
        return changed


def update_paths(paths: tuple[str, ...]) -> frozenset[str]:
    """The mask's paths, checked, with "*" spelled out."""
    problems: list[FieldViolation] = []
    for index, path in enumerate(paths):
        if path == "*":
            if len(paths) > 1:
                problems.append(
                    FieldViolation(f"update_mask.paths[{index}]", '"*" must be the only path')
                )
        elif path in OUTPUT_ONLY:
            problems.append(
                FieldViolation(
                    f"update_mask.paths[{index}]", f"'{path}' is set by the server, not updatable"
                )
            )
        elif path not in UPDATABLE and not (
            path.startswith("generation.") and path.removeprefix("generation.") in GENERATION_FIELDS
        ):
            known = ", ".join([*UPDATABLE, "generation.<field>", "*"])
            problems.append(
                FieldViolation(
                    f"update_mask.paths[{index}]", f"unknown field '{path[:100]}' (known: {known})"
                )
            )
    if problems:
        raise InvalidInput(
            "; ".join(f"{v.field}: {v.description}" for v in problems),
            violations=problems,
            reason="INVALID_UPDATE_MASK",
        )
    return frozenset(UPDATABLE) if "*" in paths else frozenset(paths)
