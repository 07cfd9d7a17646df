"""Which tool calls need a human's approval before the client may run them."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

DEFAULT_APPROVAL_PATTERNS: tuple[str, ...] = (
    "write_file",
    "delete_file",
    "move_file",
    "create_directory",
    "execute_command",
)


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """Glob patterns over tool names; a call whose tool matches one needs approval."""

    require_approval: tuple[str, ...] = DEFAULT_APPROVAL_PATTERNS

    def reason_for(self, tool_name: str) -> str | None:
        """Why `tool_name` needs approval, or None when it does not."""
        for pattern in self.require_approval:
            if fnmatchcase(tool_name, pattern):
                return f"{tool_name} matches approval rule '{pattern}'"
        return None
