"""`agent-runtime chat`: a conversation with the runtime in a terminal.

Tokens are printed as they stream; so are the model's reasoning (dimmed) and a tool call's
arguments while the model writes them (up to SHOWN_ARGUMENT_CHARS, dimmed; the call itself is
shown once the runtime has recorded it). A tool call that needs approval is put to the user
(approve / always for this session / edit the JSON arguments / reject with feedback).
/regenerate asks for the last answer again; /edit N replaces the N-th message the user sent
(/edit alone lists them) and continues from there. With a workspace the client runs
the file tools itself, strictly inside it, and execute_command only after the user approved it
(through the runtime's approval, or asked here when the agent's policy did not require one);
each result goes back to the runtime, until the turn ends.

Without a workspace nothing touches the disk: a file or command tool is answered with a tool
error saying so ("no workspace"), and one that needs approval is rejected with that feedback,
so the model can carry on without it. attempt_completion and ask_followup_question need no
workspace and work either way.

What the model sends is untrusted: the console shows control characters as escapes, and a
call is shown whole before any decision on it, a long one paged, never cut.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar

from agent_runtime.client import (
    AgentRuntimeClient,
    AgentRuntimeError,
    TurnInput,
    approve,
    approve_always,
    arguments_of,
    edit,
    edit_message,
    new_session_id,
    regenerate,
    reject,
    tool_result,
)
from agent_runtime.terminal.console import Console
from agent_runtime.terminal.options import UsageError, add_connection_arguments, connect
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
HELP = (
    "Type a message and press Enter. /regenerate asks for the last answer again; /edit N "
    "replaces your N-th message and goes on from there (/edit lists them). /quit or Ctrl-D "
    "leaves; Ctrl-C stops a running turn (the runtime cancels it) or a running tool."
)
APPROVAL_CHOICES = "  [a]pprove, a[l]ways, [e]dit, [r]eject? "
SHOWN_MESSAGE_CHARS = 70

_Result = TypeVar("_Result")


@dataclass(slots=True)
class _Line:
    kind: str = ""  # "reasoning", "call <id>", or "" when no delta line is open
    shown: int = 0  # characters shown on it


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    stop_reason: int
    tool_call: rt.ToolCall | None


class Interrupted(Exception):
    """The user pressed Ctrl-C while the client was busy."""


class Chat:
    def __init__(
        self,
        client: AgentRuntimeClient,
        console: Console,
        session_id: str,
        workspace: Workspace | None,
        *,
        agent: str = "",
        model: str = "",
    ) -> None:
        self._client = client
        self._console = console
        self._session_id = session_id
        self._workspace = workspace
        self._agent = agent
        self._model = model
        self._busy: asyncio.Future[Any] | None = None
        # Calls a human approved here (the runtime's approval, or ours for execute_command).
        self._approved: set[str] = set()
        # What the human approved for the rest of the session ("always", here or in an
        # earlier run: the session's grants): the tool and its argument globs. A command
        # they match runs without asking again.
        self._always: list[tuple[str, dict[str, str]]] = []

    async def run(self) -> int:
        self._console.start(self._interrupt)
        try:
            self._banner()
            await self._session_so_far()
            while (line := await self._console.read_line("you> ")) is not None:
                text = line.strip()
                if text in ("/quit", "/exit"):
                    return 0
                if text == "/help":
                    self._console.line(HELP)
                elif text == "/regenerate":
                    await self._converse(regenerate())
                elif text == "/edit" or text.startswith("/edit "):
                    await self._edit(text.removeprefix("/edit").strip())
                elif text:
                    await self._converse(text)
            self._console.line()
            return 0
        except AgentRuntimeError as error:
            self._console.line(f"\nerror: {error}")
            return 1
        finally:
            self._console.stop()

    def _banner(self) -> None:
        where = (
            f"workspace {self._workspace.root}"
            if self._workspace
            else "no workspace: file and command tools are reported to the model as not run"
        )
        self._console.line(
            f"agent-runtime chat: session {self._session_id} on {self._client.target}"
        )
        self._console.line(f"({where})")
        self._console.line(HELP)

    def _interrupt(self) -> None:
        if self._busy is not None and not self._busy.done():
            self._busy.cancel()
        else:
            self._console.reprompt("(type /quit or press Ctrl-D to leave)")

    async def _busy_with(self, work: Awaitable[_Result]) -> _Result:
        """Run `work` so that Ctrl-C cancels it (and only it)."""
        busy: asyncio.Future[_Result] = asyncio.ensure_future(work)
        self._busy = busy
        try:
            return await busy
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the work
            raise Interrupted from None
        finally:
            self._busy = None

    async def _session_so_far(self) -> None:
        """What an earlier run left: its "always" approvals (the session's grants: the
        runtime lets the calls they match through without asking, so they must not be asked
        again here), then a decision the session waits for, asked first."""
        try:
            session = await self._client.get_session(self._session_id)
            pending = [a async for a in self._client.list_pending_approvals(self._session_id)]
        except AgentRuntimeError as error:
            if error.reason == "SESSION_NOT_FOUND":
                return  # a new session: created by the first message
            raise
        self._always = [(grant.tool_name, dict(grant.when)) for grant in session.approval_grants]
        for approval in pending:
            call = rt.ToolCall(
                message_id=approval.message_id,
                call_id=approval.call_id,
                tool_name=approval.tool_name,
                requires_approval=True,
                approval_reason=approval.reason,
            )
            call.arguments.CopyFrom(approval.arguments)
            self._console.line("A tool call from earlier waits for your decision:")
            self._show_call(call)
            decision = await self._decide(call)
            if decision is None:
                return
            await self._converse(decision)

    async def _edit(self, which: str) -> None:
        """/edit N: the user's N-th message (as /edit lists them), replaced by what they type."""
        try:
            sent = [
                m
                async for m in self._client.list_messages(self._session_id)
                if m.role == ses.ROLE_USER
            ]
        except AgentRuntimeError as error:
            self._console.line(f"error: {error}")
            return
        if not sent:
            self._console.line("  no message of yours to edit yet")
            return
        if not which.isdigit() or not 1 <= int(which) <= len(sent):
            for number, message in enumerate(sent, 1):
                shown = " ".join(message.content.split())
                if len(shown) > SHOWN_MESSAGE_CHARS:
                    shown = shown[:SHOWN_MESSAGE_CHARS] + "..."
                self._console.line(f"  {number}. {shown}")
            self._console.line(f"  /edit N (1-{len(sent)}) replaces that message")
            return
        content = await self._console.read_line("  new text (empty: keep it): ")
        if content and content.strip():
            await self._converse(edit_message(sent[int(which) - 1].message_id, content.strip()))

    async def _converse(self, first: TurnInput | str) -> None:
        """One input, then the tool results and decisions it leads to, until the turn ends."""
        next_input: TurnInput | str | None = first
        try:
            while next_input is not None:
                outcome = await self._busy_with(self._turn(next_input))
                next_input = await self._busy_with(self._follow_up(outcome))
        except Interrupted:
            self._console.line("\n[stopped]")
        except AgentRuntimeError as error:
            self._console.line(f"\nerror: {error}")

    async def _turn(self, turn_input: TurnInput | str) -> TurnOutcome:
        streamed = ""  # the assistant text printed so far on the current line
        line = _Line()  # what the current line streams: reasoning or a call's arguments
        tool_call = None
        stop_reason = rt.STOP_REASON_UNSPECIFIED
        chunks = self._client.stream_message(
            self._session_id, turn_input, agent=self._agent, model=self._model
        )
        async for chunk in chunks:
            kind = chunk.WhichOneof("chunk")
            if kind in ("reasoning_delta", "tool_call_delta"):
                if streamed:
                    self._console.line()
                    streamed = ""
                self._show_delta(line, chunk)
                continue
            if line.kind:
                self._console.line()
                line = _Line()
            if kind == "assistant_delta":
                if not streamed:
                    self._console.write("assistant> ")
                streamed += chunk.assistant_delta.text
                self._console.write(chunk.assistant_delta.text)
                continue
            if kind == "assistant_message":
                self._finish_text(streamed, chunk.assistant_message.content)
            elif streamed:
                self._console.line()
            streamed = ""
            if kind == "tool_call":
                tool_call = chunk.tool_call
                self._show_call(tool_call)
            elif kind == "agent_switched":
                switched = chunk.agent_switched
                because = f" ({switched.reason})" if switched.reason else ""
                self._console.line(f"[agent {switched.from_agent} -> {switched.to_agent}{because}]")
            elif kind == "error":
                error = chunk.error
                self._console.line(f"[error] {error.code} {error.reason}: {error.message}")
            elif kind == "turn_completed":
                stop_reason = chunk.turn_completed.stop_reason
        return TurnOutcome(stop_reason, tool_call)

    def _show_delta(self, line: _Line, chunk: rt.StreamChunk) -> None:
        """Reasoning, dimmed after "thinking> "; a call's arguments after "[writing NAME]",
        dimmed, the first SHOWN_ARGUMENT_CHARS of them."""
        if chunk.HasField("reasoning_delta"):
            key, head, text = "reasoning", "thinking> ", chunk.reasoning_delta.text
        else:
            delta = chunk.tool_call_delta
            key, head = f"call {delta.call_id}", f"[writing {delta.tool_name}] "
            text = delta.arguments_fragment
        if line.kind != key:
            if line.kind:
                self._console.line()
            line.kind, line.shown = key, 0
            self._console.write(head)
        if key != "reasoning":
            room = SHOWN_ARGUMENT_CHARS - line.shown
            if room <= 0:
                return
            if len(text) > room:
                text = text[:room] + "..."
        line.shown += len(text)
        self._console.write_dim(text)

    def _finish_text(self, streamed: str, content: str) -> None:
        """The final message: what the deltas did not show yet (a resumed stream may have
        missed some), or all of it when nothing streamed."""
        if not streamed:
            self._console.line(f"assistant> {content}")
        elif content.startswith(streamed):
            self._console.line(content[len(streamed) :])
        else:
            self._console.line(f"\nassistant> {content}")

    async def _follow_up(self, outcome: TurnOutcome) -> TurnInput | None:
        call = outcome.tool_call
        if outcome.stop_reason == rt.STOP_REASON_AWAITING_APPROVAL and call is not None:
            return await self._decide(call)
        if outcome.stop_reason == rt.STOP_REASON_TOOL_CALL and call is not None:
            result = await self._execute(call)
            self._show_result(result)
            return tool_result(call.call_id, result.content, is_error=result.is_error)
        if outcome.stop_reason == rt.STOP_REASON_CANCELLED:
            self._console.line("[the turn was cancelled]")
        elif outcome.stop_reason == rt.STOP_REASON_MAX_ITERATIONS:
            self._console.line("[the model used up this turn's iterations]")
        return None

    # -- approvals -------------------------------------------------------------------------

    async def _decide(self, call: rt.ToolCall) -> TurnInput | None:
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

    async def _execute(self, call: rt.ToolCall) -> ToolOutcome:
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

    def _show_call(self, call: rt.ToolCall) -> None:
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

    def _show_result(self, result: ToolOutcome) -> None:
        # Only newlines end a line here: a carriage return is shown, not obeyed.
        lines = result.content.removesuffix("\n").split("\n")
        first = lines[0][:SHOWN_RESULT_CHARS]
        more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
        self._console.line(f"  -> {'error' if result.is_error else 'ok'}: {first}{more}")


def _arguments(call: rt.ToolCall) -> str:
    """The call's arguments as JSON: every string quoted, its newlines and C0 controls escaped
    (the console escapes the rest)."""
    return json.dumps(arguments_of(call), ensure_ascii=False, sort_keys=True)


def add_parser(commands: Any) -> None:
    chat = commands.add_parser(
        "chat", help="talk to the runtime in this terminal, running its tools in a workspace"
    )
    chat.add_argument("--session", help="session id to continue (default: a new session)")
    chat.add_argument(
        "--workspace",
        metavar="DIR",
        help="run the file tools inside DIR, and commands there after your approval "
        "(without it no tool touches the disk)",
    )
    chat.add_argument("--agent", default="", help="agent profile for the session, e.g. coder")
    chat.add_argument("--model", default="", help="model override sent with each message")
    add_connection_arguments(chat)
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    workspace = None
    if args.workspace:
        try:
            workspace = Workspace(Path(args.workspace))
        except OSError as exc:
            raise UsageError(f"--workspace {args.workspace}: {exc.strerror or exc}") from None
    return asyncio.run(_chat(args, workspace))


async def _chat(args: argparse.Namespace, workspace: Workspace | None) -> int:
    async with connect(args) as client:
        chat = Chat(
            client,
            Console(),
            args.session or new_session_id(),
            workspace,
            agent=args.agent,
            model=args.model,
        )
        return await chat.run()
