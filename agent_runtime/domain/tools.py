"""The tool catalogue: every built-in tool a model may be offered, with its JSON schema; and
the shape of a tool a client declares (its schema checked by tool_schemas.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    name: str
    description: str
    parameters: dict[str, Any]
    # Names of arguments that are filesystem paths (agent path restrictions apply to them).
    path_arguments: tuple[str, ...] = ()
    # Declared by a client (which runs it), not one of the runtime's built-in tools.
    declared: bool = False
    # Declared tools only: the client wants a human's approval for every call (otherwise the
    # agent's approval rules decide, as for built-in tools).
    requires_approval: bool = False


# The argument names the built-in tools give their paths. A declared tool's arguments of
# these names are paths too: approval rules' `when` globs and agents' path restrictions see
# them as they see a built-in tool's.
PATH_ARGUMENT_NAMES: tuple[str, ...] = ("path", "source", "destination", "cwd")


def declared_tool(
    name: str, description: str, parameters: dict[str, Any], *, requires_approval: bool = False
) -> ToolDefinition:
    """A client's tool as received (check it with tool_schemas.check_declared_tools)."""
    return ToolDefinition(
        name,
        description,
        parameters,
        PATH_ARGUMENT_NAMES,
        declared=True,
        requires_approval=requires_approval,
    )


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}

TOOL_CATALOGUE: dict[str, ToolDefinition] = {
    tool.name: tool
    for tool in (
        ToolDefinition(
            "read_file",
            "Read a text file, optionally only lines start_line..end_line (1-based).",
            _schema(
                {"path": _STR, "encoding": _STR, "start_line": _INT, "end_line": _INT},
                ["path"],
            ),
            ("path",),
        ),
        ToolDefinition(
            "write_file",
            "Create or overwrite a file with the given content.",
            _schema({"path": _STR, "content": _STR}, ["path", "content"]),
            ("path",),
        ),
        ToolDefinition(
            "list_files",
            "List files in a directory, optionally recursively and filtered by a glob pattern.",
            _schema({"path": _STR, "recursive": _BOOL, "pattern": _STR}, ["path"]),
            ("path",),
        ),
        ToolDefinition(
            "create_directory",
            "Create a directory (and its parents).",
            _schema({"path": _STR}, ["path"]),
            ("path",),
        ),
        ToolDefinition(
            "delete_file",
            "Delete a file.",
            _schema({"path": _STR}, ["path"]),
            ("path",),
        ),
        ToolDefinition(
            "move_file",
            "Move or rename a file.",
            _schema({"source": _STR, "destination": _STR}, ["source", "destination"]),
            ("source", "destination"),
        ),
        ToolDefinition(
            "execute_command",
            "Run a shell command in the workspace and return its output.",
            _schema({"command": _STR, "cwd": _STR, "timeout": _INT}, ["command"]),
            ("cwd",),
        ),
        ToolDefinition(
            "search_in_code",
            "Search the workspace for text or a regular expression.",
            _schema(
                {
                    "query": _STR,
                    "path": _STR,
                    "file_pattern": _STR,
                    "case_sensitive": _BOOL,
                    "regex": _BOOL,
                    "max_results": _INT,
                },
                ["query"],
            ),
            ("path",),
        ),
        ToolDefinition(
            "switch_mode",
            "Hand the conversation to another agent profile.",
            _schema({"mode": _STR, "reason": _STR}, ["mode"]),
        ),
        ToolDefinition(
            "attempt_completion",
            "Declare the task complete and summarise the result.",
            _schema({"result": _STR}, ["result"]),
        ),
        ToolDefinition(
            "ask_followup_question",
            "Ask the user a clarifying question, optionally with suggested answers.",
            _schema(
                {"question": _STR, "suggestions": {"type": "array", "items": _STR}},
                ["question"],
            ),
        ),
    )
}
