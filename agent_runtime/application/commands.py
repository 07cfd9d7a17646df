"""Inputs to the use cases, already translated from the wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_runtime.domain.approval import ApprovalVerdict
from agent_runtime.domain.events import EventType
from agent_runtime.domain.generation import GenerationConfig
from agent_runtime.domain.tools import ToolDefinition
from agent_runtime.domain.usage import UsageGroupBy

# Every command and query names the tenant it acts for; the api layer always sets it from the
# caller's API key, and everything it reads or writes is scoped to that tenant. tenant_id has no
# default on purpose: code that forgets it fails to construct the command instead of silently
# acting for the development-mode tenant.


@dataclass(frozen=True, slots=True)
class SendUserMessage:
    session_id: str
    content: str
    client_message_id: str = ""
    agent: str = ""
    model: str = ""
    # This request's generation settings and declared tools (for its turn only).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tools: tuple[ToolDefinition, ...] = ()
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class SubmitToolResult:
    session_id: str
    call_id: str
    content: str
    is_error: bool = False
    client_message_id: str = ""
    model: str = ""
    # This request's generation settings and declared tools (for its turn only).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tools: tuple[ToolDefinition, ...] = ()
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class DecideApproval:
    session_id: str
    call_id: str
    verdict: ApprovalVerdict | None
    edited_arguments: dict[str, Any] | None = None
    feedback: str = ""
    client_message_id: str = ""
    model: str = ""
    # This request's generation settings and declared tools (for its turn only).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tools: tuple[ToolDefinition, ...] = ()
    # Only with APPROVE_ALWAYS: argument -> glob that later calls to the tool must match to
    # be approved too (empty: every later call to it).
    always_when: dict[str, str] = field(default_factory=dict)
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class SwitchAgent:
    session_id: str
    agent: str
    reason: str = ""
    client_message_id: str = ""
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Regenerate:
    """Run the session's last user message again; what answered it is superseded."""

    session_id: str
    client_message_id: str = ""
    model: str = ""
    # This request's generation settings and declared tools (for its turn only).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tools: tuple[ToolDefinition, ...] = ()
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class EditMessage:
    """Replace user message `message_id` with `content` and continue from there; it and
    everything after it are superseded."""

    session_id: str
    message_id: str
    content: str
    client_message_id: str = ""
    model: str = ""
    # This request's generation settings and declared tools (for its turn only).
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tools: tuple[ToolDefinition, ...] = ()
    tenant_id: str = field(kw_only=True)


TurnCommand = (
    SendUserMessage | SubmitToolResult | DecideApproval | SwitchAgent | Regenerate | EditMessage
)


@dataclass(frozen=True, slots=True)
class CreateSession:
    session_id: str = ""
    title: str = ""
    agent: str = ""
    instructions: str = ""
    tools: tuple[ToolDefinition, ...] = ()
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class UpdateSession:
    """Set the session's fields named by `paths` (an AIP-134 update mask: "title",
    "instructions", "agent", "tools", "generation", "generation.<field>", "approval_grants",
    or "*" for all) to the values given here; a field named but left empty is cleared (for
    approval_grants: the grants in force not listed are revoked)."""

    session_id: str
    paths: tuple[str, ...]
    title: str = ""
    instructions: str = ""
    agent: str = ""
    tools: tuple[ToolDefinition, ...] = ()
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    approval_grants: tuple[ListedGrant, ...] = ()
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ListedGrant:
    """An APPROVE_ALWAYS grant as an UpdateSession request lists it: one to keep, named by its
    grant_id (its other fields empty, or as the session has them)."""

    grant_id: str
    tool_name: str = ""
    when: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListMessages:
    session_id: str
    page_size: int = 0
    page_token: str = ""
    # Also the messages a regenerate or an edit superseded.
    include_superseded: bool = False
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ListSessions:
    page_size: int = 0
    page_token: str = ""
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ListPendingApprovals:
    session_id: str
    page_size: int = 0
    page_token: str = ""
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class WatchEvents:
    session_id: str = ""
    types: frozenset[EventType] = field(default_factory=frozenset)
    # None: only events committed from now on.
    after_event_id: int | None = None
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ListTurns:
    session_id: str
    page_size: int = 0
    page_token: str = ""
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class ListAgentSwitches:
    session_id: str
    page_size: int = 0
    page_token: str = ""
    tenant_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class GetUsage:
    # None: from the beginning / until now.
    start: datetime | None = None
    end: datetime | None = None
    group_by: UsageGroupBy = UsageGroupBy.NONE
    tenant_id: str = field(kw_only=True)
    # The groups' page (their total is always the whole range's).
    page_size: int = field(default=0, kw_only=True)
    page_token: str = field(default="", kw_only=True)
