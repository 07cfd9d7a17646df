"""What a client sets on a session (title, instructions, agent, declared tools, generation
defaults, the approval grants it keeps): the checks it passes, and UpdateSession's update
mask (AIP-134)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from agent_runtime.application.commands import ListedGrant, UpdateSession
from agent_runtime.application.declared_tools import DeclaredToolChecks
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import FieldViolation, InvalidInput
from agent_runtime.domain.generation import GenerationConfig, ToolChoiceMode
from agent_runtime.domain.model import Session
from agent_runtime.domain.text import storable
from agent_runtime.domain.tool_filter import ToolFilterService
from agent_runtime.domain.tools import ToolDefinition

GENERATION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationConfig))
# What UpdateSession may change; "*" is all of them.
UPDATABLE = ("title", "instructions", "agent", "tools", "generation", "approval_grants")
# The session's other fields: the server sets them.
OUTPUT_ONLY = (
    "session_id",
    "message_count",
    "running_turn_id",
    "created_at",
    "last_activity_at",
    "agent_history",
    "pending_approvals_count",
    "usage",
)
_GRANTS = "session.approval_grants"


class SessionSettings:
    def __init__(
        self,
        agents: AgentCatalogue,
        tools: ToolFilterService,
        *,
        max_instructions_bytes: int,
        declared_tools: DeclaredToolChecks | None = None,
    ) -> None:
        self._agents = agents
        self._tools = tools
        self._max_instructions = max_instructions_bytes
        self._declared_tools = declared_tools or DeclaredToolChecks()

    async def check(self, session: Session) -> None:
        """Raise InvalidInput for settings a new session cannot have."""
        self._check_instructions(session, "")
        await self.check_tools(session.tools, "tools")
        self._check_generation(session, "")

    async def check_tools(self, tools: Sequence[ToolDefinition], field: str) -> None:
        """Raise InvalidInput for declared tools a session cannot have."""
        await self._declared_tools.check(tools, field, reserved=self._tools.builtin_names)

    def _check_instructions(self, session: Session, prefix: str) -> None:
        size = len(session.instructions.encode("utf-8", "surrogatepass"))
        if size > self._max_instructions:
            raise InvalidInput.field(
                f"{prefix}instructions",
                f"is {size} bytes; the limit is {self._max_instructions}",
                reason="MESSAGE_TOO_LARGE",
            )

    def _check_generation(self, session: Session, prefix: str) -> None:
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

    def updated(self, session: Session, cmd: UpdateSession, paths: frozenset[str]) -> Session:
        """A copy of `session` with the settings the update mask names (`paths`, from
        update_paths) set from `cmd`, checked but for the declared tools: the caller checks
        `cmd.tools` with check_tools first, outside the transaction (a schema's check may take
        a while); the session's own were checked when declared. The approval grants are not
        settings of the session's row: see grants_to_revoke."""
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
        self._check_instructions(changed, "session.")
        self._check_generation(changed, "session.")
        changed.instructions = storable(changed.instructions)  # as the store keeps them
        return changed


def grants_to_revoke(
    in_force: list[ApprovalGrant], listed: tuple[ListedGrant, ...]
) -> list[ApprovalGrant]:
    """The grants in force that `listed` leaves out, to be revoked. Raises InvalidInput naming
    each listed grant that is not one of them: without a grant_id (grants are made only by
    APPROVE_ALWAYS), not in force, or changed (its tool or its globs)."""
    by_id = {grant.grant_id: grant for grant in in_force}
    problems: list[FieldViolation] = []
    for index, grant in enumerate(listed):
        where = f"{_GRANTS}[{index}]"
        kept = by_id.get(grant.grant_id)
        if not grant.grant_id:
            problems.append(
                FieldViolation(
                    f"{where}.grant_id",
                    "grants are made only by an APPROVE_ALWAYS decision; UpdateSession keeps "
                    "the grants it lists (by grant_id) and revokes the others",
                )
            )
        elif kept is None:
            problems.append(
                FieldViolation(
                    f"{where}.grant_id",
                    f"no grant '{grant.grant_id[:128]}' in force in this session",
                )
            )
        elif (grant.tool_name and grant.tool_name != kept.tool_name) or (
            grant.when and grant.when != dict(kept.when)
        ):
            problems.append(
                FieldViolation(
                    where,
                    f"grant '{kept.grant_id}' cannot be changed, only kept or revoked: list it "
                    "as GetSession shows it, or by its grant_id alone",
                )
            )
    if problems:
        raise InvalidInput(
            "; ".join(f"{v.field}: {v.description}" for v in problems), violations=problems
        )
    keep = {grant.grant_id for grant in listed}
    return [grant for grant in in_force if grant.grant_id not in keep]


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
