"""Checks an input before anything is stored, and fingerprints it for idempotency."""

from __future__ import annotations

import hashlib
import json

from agent_runtime.application.commands import (
    DecideApproval,
    EditMessage,
    Regenerate,
    SendUserMessage,
    SubmitToolResult,
    SwitchAgent,
    TurnCommand,
)
from agent_runtime.application.declared_tools import DeclaredToolChecks
from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.approval import ApprovalVerdict
from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.model import (
    MAX_ID_LENGTH,
    MAX_MODEL_NAME,
    MAX_SWITCH_REASON_CHARS,
    validate_id,
    validate_session_id,
    validate_short_text,
)
from agent_runtime.domain.tools import TOOL_CATALOGUE, ToolDefinition

# The width of the column it is stored in (turns.client_message_id).
MAX_CLIENT_MESSAGE_ID = 128
# An APPROVE_ALWAYS rule: at most this many argument globs, each this long at most.
MAX_GRANT_GLOBS = 16
MAX_GRANT_GLOB_CHARS = 1024


class TurnValidator:
    def __init__(
        self,
        agents: AgentCatalogue,
        max_message_bytes: int,
        declared_tools: DeclaredToolChecks | None = None,
    ) -> None:
        self._agents = agents
        self._max_bytes = max_message_bytes
        self._declared_tools = declared_tools or DeclaredToolChecks()

    async def validate(self, cmd: TurnCommand) -> None:
        if cmd.session_id:
            validate_session_id(cmd.session_id)
        elif not isinstance(cmd, SendUserMessage | SwitchAgent):
            raise InvalidInput.field("session_id", "is required for this input")
        validate_short_text("client_message_id", cmd.client_message_id, MAX_CLIENT_MESSAGE_ID)
        if not isinstance(cmd, SwitchAgent):
            validate_short_text("model", cmd.model, MAX_MODEL_NAME)
        if cmd.client_message_id and not cmd.session_id:
            raise InvalidInput.field(
                "session_id", "is required with client_message_id (keys are per session)"
            )
        if not isinstance(cmd, SwitchAgent):
            cmd.generation.validate("generation")
            if cmd.tools:
                await self._declared_tools.check(cmd.tools, "tools", reserved=TOOL_CATALOGUE)
        match cmd:
            case SendUserMessage():
                if not cmd.content.strip():
                    raise InvalidInput.field(
                        "user_message.content", "must not be empty", reason="EMPTY_MESSAGE"
                    )
                self._check_size("user_message.content", cmd.content)
                if cmd.agent:
                    self._agents.get(cmd.agent)  # unknown agent -> InvalidInput
            case SubmitToolResult():
                _require_call_id("tool_result.call_id", cmd.call_id)
                self._check_size("tool_result.content", cmd.content)
            case DecideApproval():
                _require_call_id("approval_decision.call_id", cmd.call_id)
                if cmd.verdict is None:
                    raise InvalidInput.field(
                        "approval_decision.decision",
                        "must be APPROVE, EDIT, REJECT or APPROVE_ALWAYS",
                    )
                if cmd.verdict is ApprovalVerdict.EDIT and cmd.edited_arguments is None:
                    raise InvalidInput.field(
                        "approval_decision.edited_arguments", "is required with EDIT"
                    )
                self._check_size("approval_decision.feedback", cmd.feedback)
                _check_always_when(cmd)
            case EditMessage():
                validate_id("edit_message.message_id", cmd.message_id)
                if not cmd.content.strip():
                    raise InvalidInput.field(
                        "edit_message.content", "must not be empty", reason="EMPTY_MESSAGE"
                    )
                self._check_size("edit_message.content", cmd.content)
            case Regenerate():
                pass  # nothing but the session, required above
            case SwitchAgent():
                if not cmd.agent:
                    raise InvalidInput.field("switch_agent.agent", "must name an agent")
                if len(cmd.reason) > MAX_SWITCH_REASON_CHARS:  # free text: NUL is repaired
                    raise InvalidInput.field(
                        "switch_agent.reason",
                        f"must be at most {MAX_SWITCH_REASON_CHARS} characters",
                    )
                try:
                    self._agents.get(cmd.agent)
                except InvalidInput as exc:
                    raise InvalidInput.field(
                        "switch_agent.agent", exc.violations[0].description, reason=exc.reason
                    ) from None

    def _check_size(self, field: str, text: str) -> None:
        size = len(text.encode())
        if size > self._max_bytes:
            raise InvalidInput.field(
                field,
                f"is {size} bytes; the limit is {self._max_bytes}",
                reason="MESSAGE_TOO_LARGE",
            )


def _check_always_when(cmd: DecideApproval) -> None:
    field = "approval_decision.always_when"
    if cmd.always_when and cmd.verdict is not ApprovalVerdict.APPROVE_ALWAYS:
        raise InvalidInput.field(field, "is only for APPROVE_ALWAYS")
    if len(cmd.always_when) > MAX_GRANT_GLOBS:
        raise InvalidInput.field(field, f"may hold at most {MAX_GRANT_GLOBS} arguments")
    for name, glob in cmd.always_when.items():
        if not name or not glob or len(name) > MAX_ID_LENGTH or len(glob) > MAX_GRANT_GLOB_CHARS:
            raise InvalidInput.field(
                field,
                f"maps argument names (1-{MAX_ID_LENGTH} characters) to globs "
                f"(1-{MAX_GRANT_GLOB_CHARS} characters)",
            )


def _require_call_id(field: str, call_id: str) -> None:
    validate_id(field, call_id)


def fingerprint(cmd: TurnCommand) -> str:
    """What makes two inputs "the same" for idempotency: everything but the key itself."""
    match cmd:
        case SendUserMessage():
            parts: list[object] = ["user_message", cmd.content, cmd.agent, cmd.model]
        case SubmitToolResult():
            parts = ["tool_result", cmd.call_id, cmd.content, cmd.is_error, cmd.model]
        case DecideApproval():
            parts = [
                "approval_decision",
                cmd.call_id,
                cmd.verdict.value if cmd.verdict else None,
                cmd.edited_arguments,
                cmd.feedback,
                cmd.model,
                *([cmd.always_when] if cmd.always_when else []),  # older keys hash as before
            ]
        case SwitchAgent():
            parts = ["switch_agent", cmd.agent, cmd.reason]
        case Regenerate():
            parts = ["regenerate", cmd.model]
        case EditMessage():
            parts = ["edit_message", cmd.message_id, cmd.content, cmd.model]
    if not isinstance(cmd, SwitchAgent):
        # Only when set: the fingerprints of inputs without them stay what they were.
        if not cmd.generation.is_empty:
            parts.append({"generation": cmd.generation.to_dict()})
        if cmd.tools:
            parts.append({"tools": [_tool_fingerprint(tool) for tool in cmd.tools]})
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _tool_fingerprint(tool: ToolDefinition) -> list[object]:
    return [tool.name, tool.description, tool.parameters, tool.requires_approval]
