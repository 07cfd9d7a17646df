"""`agent-runtime chat`: a conversation with the runtime in a terminal.

Tokens are printed as they stream; so are the model's reasoning (dimmed) and a tool call's
arguments while the model writes them (up to SHOWN_ARGUMENT_CHARS, dimmed; the call itself is
shown once the runtime has recorded it). A tool call that needs approval is put to the user
(approve / always for this session / edit the JSON arguments / reject with feedback;
tool_calls.py).
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
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent_runtime.client import (
    AgentRuntimeClient,
    AgentRuntimeError,
    TurnInput,
    edit_message,
    new_session_id,
    regenerate,
    tool_result,
)
from agent_runtime.terminal.console import Console
from agent_runtime.terminal.options import UsageError, add_connection_arguments, connect
from agent_runtime.terminal.tool_calls import SHOWN_ARGUMENT_CHARS, ToolCallHandler
from agent_runtime.terminal.workspace import Workspace
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses

HELP = (
    "Type a message and press Enter. /regenerate asks for the last answer again; /edit N "
    "replaces your N-th message and goes on from there (/edit lists them). /quit or Ctrl-D "
    "leaves; Ctrl-C stops a running turn (the runtime cancels it) or a running tool."
)
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
        self._tool_calls = ToolCallHandler(console, workspace)

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
        self._tool_calls.remember(session.approval_grants)
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
            self._tool_calls.show_call(call)
            decision = await self._tool_calls.decide(call)
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
                self._tool_calls.show_call(tool_call)
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
            return await self._tool_calls.decide(call)
        if outcome.stop_reason == rt.STOP_REASON_TOOL_CALL and call is not None:
            result = await self._tool_calls.execute(call)
            self._tool_calls.show_result(result)
            return tool_result(call.call_id, result.content, is_error=result.is_error)
        if outcome.stop_reason == rt.STOP_REASON_CANCELLED:
            self._console.line("[the turn was cancelled]")
        elif outcome.stop_reason == rt.STOP_REASON_MAX_ITERATIONS:
            self._console.line("[the model used up this turn's iterations]")
        return None


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
