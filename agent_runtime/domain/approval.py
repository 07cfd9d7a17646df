"""Which tool calls may run at once, need a human's approval first, or may not run at all.

An agent's approval policy is an ordered list of rules; the first rule that matches a call
decides (allow, ask or deny). A rule matches a tool name (a glob) and, optionally, `when`
globs over the call's top-level string arguments; a path argument is matched as a
workspace-relative path (normalise_workspace_path). A call no rule matches is allowed.

A human who answers APPROVE_ALWAYS leaves a grant with the session: later calls the grant
matches are allowed where a rule would ask (never where one denies).

A call that waits for a human is an Approval: pending until it is decided (ApprovalVerdict),
expires or is superseded (ApprovalStatus).
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

from agent_runtime.domain.model import ToolCallRecord

DEFAULT_APPROVAL_PATTERNS: tuple[str, ...] = (
    "write_file",
    "delete_file",
    "move_file",
    "create_directory",
    "execute_command",
)

# Arguments and globs of one `when`: (top-level argument name, glob), in the rule's order.
When = tuple[tuple[str, str], ...]


class RuleAction(Enum):
    ALLOW = "allow"  # the client runs the call at once
    ASK = "ask"  # a human approves, edits or rejects it first
    DENY = "deny"  # never sent to the client: the model reads that it was refused


def normalise_workspace_path(path: str) -> str | None:
    """A path argument as the workspace-relative path it names: '\\' read as '/', '.' and
    '..' resolved, no leading './' ('.' for the workspace itself). None for a path that
    leaves the workspace (absolute, or climbing above it), which no `when` glob matches."""
    slashed = path.replace("\\", "/")
    if slashed.startswith("/") or (len(slashed) > 1 and slashed[1] == ":"):
        return None  # absolute (a drive letter too): the workspace's place is not known here
    normal = posixpath.normpath(slashed) if slashed else "."
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def arguments_match(
    when: When, arguments: Mapping[str, Any], path_arguments: Collection[str] = ()
) -> bool:
    """Every (argument, glob) of `when` matches: the argument is a string (a path argument
    after normalise_workspace_path) and fnmatch's glob matches it ('*' crosses '/')."""
    for name, pattern in when:
        value = arguments.get(name)
        if not isinstance(value, str):
            return False
        if name in path_arguments:
            normal = normalise_workspace_path(value)
            if normal is None:
                return False
            value = normal
        if not fnmatchcase(value, pattern):
            return False
    return True


def describe_when(when: When) -> str:
    return ", ".join(f"{name}={pattern!r}" for name, pattern in when)


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    tool: str  # glob over tool names
    action: RuleAction = RuleAction.ASK
    when: When = ()

    def matches(
        self, tool_name: str, arguments: Mapping[str, Any], path_arguments: Collection[str] = ()
    ) -> bool:
        return fnmatchcase(tool_name, self.tool) and arguments_match(
            self.when, arguments, path_arguments
        )

    def describe(self) -> str:
        """e.g. `'execute_command' when command='git status*'`."""
        text = repr(self.tool)
        return f"{text} when {describe_when(self.when)}" if self.when else text


@dataclass(frozen=True, slots=True)
class ApprovalGrant:
    """A human's "allow for the rest of this session" (APPROVE_ALWAYS): calls to `tool_name`
    whose arguments match `when` (every call to the tool when empty)."""

    grant_id: str
    session_id: str
    tool_name: str
    when: When
    granted_at: datetime
    turn_id: str = ""  # the turn that recorded the decision
    call_id: str = ""  # the call the human approved
    revoked_at: datetime | None = None

    def matches(
        self, tool_name: str, arguments: Mapping[str, Any], path_arguments: Collection[str] = ()
    ) -> bool:
        return (
            self.revoked_at is None
            and tool_name == self.tool_name
            and arguments_match(self.when, arguments, path_arguments)
        )


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    """What the policy says about one call, and which rule (or grant) said it."""

    action: RuleAction
    reason: str = ""
    rule: ApprovalRule | None = None
    rule_index: int = 0  # 1-based position of `rule` in the policy; 0: no rule matched
    grant_id: str = ""  # the session's grant that allowed a call the rule asks about


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """An agent's ordered approval rules; the first that matches a call decides."""

    rules: tuple[ApprovalRule, ...] = field(
        default_factory=lambda: tuple(ApprovalRule(p) for p in DEFAULT_APPROVAL_PATTERNS)
    )

    @classmethod
    def asking(cls, patterns: Sequence[str]) -> ApprovalPolicy:
        """A call to a tool matching one of `patterns` needs approval (the rules before
        `when` and actions existed)."""
        return cls(tuple(ApprovalRule(p) for p in patterns))

    @property
    def require_approval(self) -> tuple[str, ...]:
        """The tool globs of the rules that ask (whatever their `when`)."""
        return tuple(r.tool for r in self.rules if r.action is RuleAction.ASK)

    def decide(
        self,
        tool_name: str,
        arguments: Mapping[str, Any],
        *,
        path_arguments: Collection[str] = (),
        grants: Sequence[ApprovalGrant] = (),
    ) -> ApprovalOutcome:
        for index, rule in enumerate(self.rules, 1):
            if not rule.matches(tool_name, arguments, path_arguments):
                continue
            if rule.action is RuleAction.ASK:
                granted = next(
                    (g for g in grants if g.matches(tool_name, arguments, path_arguments)), None
                )
                if granted is not None:
                    return ApprovalOutcome(
                        RuleAction.ALLOW,
                        f"allowed for this session by grant {granted.grant_id}",
                        rule,
                        index,
                        granted.grant_id,
                    )
                return ApprovalOutcome(
                    RuleAction.ASK, _asked_because(tool_name, rule, index), rule, index
                )
            verb = "denies" if rule.action is RuleAction.DENY else "allows"
            reason = f"approval rule #{index} ({rule.describe()}) {verb} this call"
            return ApprovalOutcome(rule.action, reason, rule, index)
        return ApprovalOutcome(RuleAction.ALLOW)


def _asked_because(tool_name: str, rule: ApprovalRule, index: int) -> str:
    if not rule.when:
        return f"{tool_name} matches approval rule '{rule.tool}'"
    return f"{tool_name} matches approval rule #{index} ({rule.describe()})"


class ApprovalStatus(Enum):
    PENDING = "pending"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    APPROVED_ALWAYS = "approved_always"


class ApprovalVerdict(Enum):
    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    APPROVE_ALWAYS = "approve_always"


@dataclass(slots=True)
class Approval:
    """A risky tool call waiting for a human. The original arguments are kept for the record."""

    approval_id: str
    session_id: str
    call_id: str
    message_id: str
    turn_id: str
    tool_name: str
    arguments: dict[str, Any]
    reason: str
    created_at: datetime
    expires_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING
    final_arguments: dict[str, Any] | None = None
    feedback: str = ""
    decided_at: datetime | None = None
    # The agent's rule that asked, and its 1-based position among the agent's rules.
    rule: ApprovalRule | None = None
    rule_index: int = 0

    @classmethod
    def open(
        cls,
        approval_id: str,
        session_id: str,
        message_id: str,
        turn_id: str,
        call: ToolCallRecord,
        reason: str,
        now: datetime,
        ttl: timedelta,
        *,
        rule: ApprovalRule | None = None,
        rule_index: int = 0,
    ) -> Approval:
        return cls(
            approval_id,
            session_id,
            call.call_id,
            message_id,
            turn_id,
            call.tool_name,
            dict(call.arguments),
            reason,
            now,
            now + ttl,
            rule=rule,
            rule_index=rule_index,
        )

    def is_pending(self, now: datetime) -> bool:
        return self.status is ApprovalStatus.PENDING and now < self.expires_at

    def is_expired(self, now: datetime) -> bool:
        return self.status is ApprovalStatus.PENDING and now >= self.expires_at

    def close(
        self,
        status: ApprovalStatus,
        now: datetime,
        *,
        feedback: str = "",
        final_arguments: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.feedback = feedback
        self.final_arguments = final_arguments
        self.decided_at = now
