"""What `agent-runtime chat` does with the model's tool calls: shows each whole, puts those
that need approval to the user (approve / always / edit / reject), answers the
conversation tools, and runs the workspace tools, execute_command only once a human said yes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from agent_runtime.client import (
    TurnInput,
    approve,
    approve_always,
    arguments_of,
    edit,
    reject,
)
from agent_runtime.terminal.console import Console
from agent_runtime.terminal.workspace import WORKSPACE_TOOLS, ToolOutcome, Workspace
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses

NO_WORKSPACE = (
    "not executed: the terminal client runs without a workspace "
    "(start `agent-runtime chat` with --workspace DIR to let the model use files and commands)"
)
COMPLETION_SEEN = "the user has seen the result"
# Catalogue tools the client answers without a workspace; switch_mode never reaches a client
# (the runtime acts on it).
CONVERSATION_TOOLS = frozenset({"attempt_completion", "ask_followup_question"})
RUNTIME_TOOLS = frozenset({"switch_mode"})
# A tool call's arguments longer than this are cut where the call streams by; the whole call
# is shown (paged when long) before the user decides on it.
SHOWN_ARGUMENT_CHARS = 400
# A command up to this long is repeated in the [y/N] question.
ASKED_COMMAND_CHARS = 200
SHOWN_RESULT_CHARS = 200
APPROVAL_CHOICES = "  [a]pprove, a[l]ways, [e]dit, [r]eject? "


class ToolCallHandler:
    """The chat's side of the tool calls of one session: what the human approved, and what
    each call becomes (a decision, or a result for the model)."""

    def __init__(self, console: Console, workspace: Workspace | None) -> None:
        self._console = console
        self._workspace = workspace
        # Calls a human approved here (the runtime's approval, or ours for execute_command).
        self._approved: set[str] = set()
        # What the human approved for the rest of the session ("always", here or in an
        # earlier run: the session's grants): the tool and its argument globs. A command
        # they match runs without asking again.
        self._always: list[tuple[str, dict[str, str]]] = []

    def remember(self, grants: Iterable[ses.ApprovalGrant]) -> None:
        """The session's grants, left by an earlier run: the runtime lets the calls they
        match through without asking, so they are not asked here either."""
        self._always = [(grant.tool_name, dict(grant.when)) for grant in grants]

    # -- approvals -------------------------------------------------------------------------

    async def decide(self, call: rt.ToolCall) -> TurnInput | None:
        """The user's verdict; None if they left (the call stays pending in the session)."""
        if self._workspace is None and call.tool_name in WORKSPACE_TOOLS:
            self._console.line("  rejected: no workspace to run it in (see --workspace)")
            return reject(call.call_id, feedback=NO_WORKSPACE)
        if not await self._shown_whole(call):
            return None
        reason = f": {call.approval_reason}" if call.approval_reason else ""
        self._console.line(f"  this call needs your approval{reason}")
        while (answer := await self._console.read_line(APPROVAL_CHOICES)) is not None:
            choice = answer.strip().lower()
            if choice in ("a", "approve", "y", "yes"):
                self._approved.add(call.call_id)
                return approve(call.call_id)
            if choice in ("l", "always"):
                when = await self._always_which(call)
                if when is not None:
                    self._approved.add(call.call_id)
                    self._always.append((call.tool_name, when))
                    return approve_always(call.call_id, when=when)
            elif choice in ("e", "edit"):
                arguments = await self._edited_arguments(call)
                if arguments is not None:
                    self._approved.add(call.call_id)
                    return edit(call.call_id, arguments)
            elif choice in ("r", "reject", "n", "no"):
                feedback = await self._console.read_line("  feedback for the model (optional): ")
                return reject(call.call_id, feedback=(feedback or "").strip())
            else:
                self._console.line("  please answer a, l, e or r")
        return None

    async def _always_which(self, call: rt.ToolCall) -> dict[str, str] | None:
        """Which later calls to the tool need no approval in this session: all of them, or
        those whose argument matches a glob (e.g. command=git *). None: back to the choice."""
        while True:
            line = await self._console.read_line(
                f"  approve which {call.tool_name} calls from now on? "
                "(Enter: all; or argument=glob, e.g. command=git *; - : back) "
            )
            if line is None or line.strip() == "-":
                return None
            if not line.strip():
                return {}
            name, equals, glob = line.strip().partition("=")
            if equals and name.strip() and glob.strip():
                return {name.strip(): glob.strip()}
            self._console.line("  answer argument=glob, e.g. command=git *")

    async def _edited_arguments(self, call: rt.ToolCall) -> dict[str, Any] | None:
        if not await self._console.page(f"  current arguments: {_arguments(call)}"):
            return None
        while True:
            line = await self._console.read_line("  new arguments (JSON object, empty: back): ")
            if not line or not line.strip():
                return None
            try:
                arguments = json.loads(line)
            except json.JSONDecodeError as exc:
                self._console.line(f"  not JSON: {exc.msg}")
                continue
            if isinstance(arguments, dict):
                return arguments
            self._console.line("  the arguments must be a JSON object")

    # -- running tools ---------------------------------------------------------------------

    async def execute(self, call: rt.ToolCall) -> ToolOutcome:
        arguments = arguments_of(call)
        name = call.tool_name
        if name == "attempt_completion":
            self._console.line(f"[done] {arguments.get('result', '')}")
            return ToolOutcome(COMPLETION_SEEN)
        if name == "ask_followup_question":
            return await self._ask_user(arguments)
        if name not in WORKSPACE_TOOLS:
            return ToolOutcome(f"the terminal client cannot run {name!r}", is_error=True)
        if self._workspace is None:
            return ToolOutcome(NO_WORKSPACE, is_error=True)
        asked = (
            name == "execute_command"
            and call.call_id not in self._approved
            and not self._approved_always(name, arguments)
        )
        if asked and not await self._user_runs(call):
            return ToolOutcome("not executed: the user declined to run it", is_error=True)
        return await self._workspace.run(name, arguments)

    def _approved_always(self, tool_name: str, arguments: dict[str, Any]) -> bool:
        return any(
            tool == tool_name
            and all(
                isinstance(arguments.get(name), str) and fnmatchcase(arguments[name], glob)
                for name, glob in when.items()
            )
            for tool, when in self._always
        )

    async def _user_runs(self, call: rt.ToolCall) -> bool:
        """Whether the user says yes to a command no approval rule put to them."""
        if not await self._shown_whole(call):
            return False
        command = json.dumps(arguments_of(call).get("command", ""), ensure_ascii=False)
        what = command if len(command) <= ASKED_COMMAND_CHARS else "the command above"
        answer = await self._console.read_line(f"  run {what} in the workspace? [y/N] ")
        return (answer or "").strip().lower() in ("y", "yes")

    async def _ask_user(self, arguments: dict[str, Any]) -> ToolOutcome:
        self._console.line(f"[question] {arguments.get('question', '')}")
        offered = arguments.get("suggestions")
        suggestions = [str(s) for s in offered] if isinstance(offered, list) else []
        for number, suggestion in enumerate(suggestions, 1):
            self._console.line(f"  {number}. {suggestion}")
        answer = await self._console.read_line("  your answer: ")
        if answer is None:
            return ToolOutcome("the user did not answer", is_error=True)
        choice = answer.strip()
        if choice.isdigit() and 1 <= int(choice) <= len(suggestions):
            choice = suggestions[int(choice) - 1]
        return ToolOutcome(choice)

    def show_call(self, call: rt.ToolCall) -> None:
        shown = _arguments(call)
        if len(shown) > SHOWN_ARGUMENT_CHARS:
            more = len(shown) - SHOWN_ARGUMENT_CHARS
            shown = f"{shown[:SHOWN_ARGUMENT_CHARS]} [... {more} more characters]"
        label = "approved" if call.call_id in self._approved else "tool call"
        self._console.line(f"[{label}] {call.tool_name} {shown}")

    async def _shown_whole(self, call: rt.ToolCall) -> bool:
        """Before the user decides on `call`: all of it on the screen (a short one is, where
        the call streamed by, just above). False if input ended."""
        shown = _arguments(call)
        if len(shown) <= SHOWN_ARGUMENT_CHARS:
            return True
        whole = f"  the whole call ({len(shown)} characters):\n{call.tool_name} {shown}"
        return await self._console.page(whole)

    def show_result(self, result: ToolOutcome) -> None:
        # Only newlines end a line here: a carriage return is shown, not obeyed.
        lines = result.content.removesuffix("\n").split("\n")
        first = lines[0][:SHOWN_RESULT_CHARS]
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        self._console.line(f"  -> {'error' if result.is_error else 'ok'}: {first}{more}")


def _arguments(call: rt.ToolCall) -> str:
    """The call's arguments as JSON: every string quoted, its newlines and C0 controls escaped
    (the console escapes the rest)."""
    return json.dumps(arguments_of(call), ensure_ascii=False, sort_keys=True)
