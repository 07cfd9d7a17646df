"""`agent-runtime sessions list|show|delete|revoke-grant`: sessions, their history, turns and
usage from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from agent_runtime.client import AgentRuntimeClient, arguments_of
from agent_runtime.terminal.options import add_connection_arguments, connect
from agent_runtime.terminal.visible import visible
from agent_runtime.v1 import agent_runtime_pb2 as rt
from agent_runtime.v1 import session_pb2 as ses

_ROLES = {
    ses.ROLE_SYSTEM: "system",
    ses.ROLE_USER: "user",
    ses.ROLE_ASSISTANT: "assistant",
    ses.ROLE_TOOL: "tool",
}


def add_parser(commands: Any) -> None:
    sessions = commands.add_parser("sessions", help="list, show or delete sessions")
    actions = sessions.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="sessions, most recently active first")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    add_connection_arguments(listing)

    show = actions.add_parser("show", help="a session, its usage, turns and messages")
    show.add_argument("session_id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument(
        "--all",
        action="store_true",
        help="also the messages a regenerate or an edit superseded",
    )
    add_connection_arguments(show)

    delete = actions.add_parser("delete", help="delete a session")
    delete.add_argument("session_id")
    add_connection_arguments(delete)

    revoke = actions.add_parser(
        "revoke-grant", help="end an 'always' approval (`sessions show` lists them)"
    )
    revoke.add_argument("session_id")
    revoke.add_argument("grant_id")
    add_connection_arguments(revoke)

    sessions.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with connect(args) as client:
        if args.action == "list":
            await _list(client, as_json=args.json)
        elif args.action == "show":
            await _show(client, args.session_id, as_json=args.json, everything=args.all)
        elif args.action == "revoke-grant":
            await client.revoke_approval_grant(args.session_id, args.grant_id)
            print(f"revoked grant {args.grant_id} of session {args.session_id}")
        else:
            await client.delete_session(args.session_id)
            print(f"deleted session {args.session_id}")
    return 0


async def _list(client: AgentRuntimeClient, *, as_json: bool) -> None:
    sessions = [s async for s in client.list_sessions()]
    if as_json:
        json.dump([_as_dict(s) for s in sessions], sys.stdout, indent=2)
        _print()
        return
    if not sessions:
        _print("no sessions")
        return
    print_table(
        ("SESSION", "AGENT", "MESSAGES", "LAST ACTIVITY", "TITLE"),
        [
            (
                s.session_id,
                s.agent,
                str(s.message_count),
                _time(s.last_activity_at),
                s.title,
            )
            for s in sessions
        ],
    )


async def _show(
    client: AgentRuntimeClient, session_id: str, *, as_json: bool, everything: bool
) -> None:
    session = await client.get_session(session_id)
    turns = [t async for t in client.list_turns(session_id)]
    messages = [m async for m in client.list_messages(session_id, include_superseded=everything)]
    if as_json:
        document = {
            "session": _as_dict(session),
            "turns": [_as_dict(t) for t in turns],
            "messages": [_as_dict(m) for m in messages],
        }
        json.dump(document, sys.stdout, indent=2)
        _print()
        return
    _print(f"session {session.session_id}" + (f" - {session.title}" if session.title else ""))
    _print(f"  agent: {session.agent}")
    _print(
        f"  created: {_time(session.created_at)}, last activity: {_time(session.last_activity_at)}"
    )
    _print(
        f"  messages: {session.message_count}, pending approvals: {session.pending_approvals_count}"
    )
    if session.running_turn_id:
        _print(f"  running turn: {session.running_turn_id}")
    earlier = session.agent_switch_count - len(session.agent_history)
    if earlier > 0:  # the session shows its most recent switches only
        _print(f"  agent switches: {earlier} earlier ones not shown")
    for switch in session.agent_history:
        _print(f"  agent switch: {switch.from_agent} -> {switch.to_agent} ({switch.reason})")
    usage = session.usage
    _print(
        f"  usage: {usage.total_tokens} tokens ({usage.prompt_tokens} prompt, "
        f"{usage.completion_tokens} completion) in {usage.turns} turns"
    )
    for grant in session.approval_grants:
        when = ", ".join(f"{k}={v!r}" for k, v in sorted(grant.when.items())) or "every call"
        _print(f"  always approved: {grant.tool_name} ({when}) [{grant.grant_id}]")
    if turns:
        _print()
        print_table(
            ("TURN", "STARTED", "OUTCOME", "MODEL", "TOKENS", "CALLS", "FIRST TOKEN"),
            [_turn_row(turn) for turn in turns],
        )
    _print()
    for message in messages:
        _print(_message_line(message))


def _turn_row(turn: ses.Turn) -> tuple[str, ...]:
    outcome = ses.TurnState.Name(turn.state).removeprefix("TURN_STATE_").lower()
    if turn.stop_reason:
        outcome = rt.StopReason.Name(turn.stop_reason).removeprefix("STOP_REASON_").lower()
    if turn.error_reason:
        outcome += f" ({turn.error_reason})"
    first_token = (
        f"{turn.time_to_first_token.ToTimedelta().total_seconds():.2f}s"
        if turn.HasField("time_to_first_token")
        else "-"
    )
    return (
        turn.turn_id,
        _time(turn.started_at),
        outcome,
        turn.model,
        str(turn.usage.total_tokens),
        f"{turn.model_calls} model, {turn.tool_calls} tool",
        first_token,
    )


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last one is not padded."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        _print("  ".join([*cells, row[-1]]))


def _message_line(message: ses.Message) -> str:
    role = _ROLES.get(message.role, "?")
    head = f"#{message.position} {role}"
    if message.role == ses.ROLE_TOOL:
        head += f" [{message.tool_call_id}{', error' if message.is_error else ''}]"
    if message.incomplete:
        head += " [incomplete]"
    if message.superseded_by_turn_id:
        head += f" [superseded by {message.superseded_by_turn_id}]"
    parts = [message.content] if message.content else []
    for call in message.tool_calls:
        arguments = json.dumps(arguments_of(call), ensure_ascii=False, sort_keys=True)
        parts.append(f"-> {call.tool_name} {arguments} [{call.call_id}]")
    return f"{head}: {' '.join(parts)}".rstrip().replace("\n", "\n    ")


def _print(*parts: str) -> None:
    """Text the model wrote (titles, messages, tool output) with its control characters shown
    as escapes: it cannot drive the terminal."""
    print(*(visible(part) for part in parts))


def _time(stamp: Any) -> str:
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")) if stamp.seconds else "-"


def _as_dict(message: ProtoMessage) -> dict[str, Any]:
    return dict(json_format.MessageToDict(message, preserving_proto_field_name=True))
