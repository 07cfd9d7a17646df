"""`agent-runtime usage`: the caller's tenant's token totals, optionally grouped."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from agent_runtime.terminal.options import UsageError, add_connection_arguments, connect
from agent_runtime.terminal.sessions import print_table
from agent_runtime.v1 import usage_pb2 as us

_GROUPS = {
    "model": us.USAGE_GROUP_BY_MODEL,
    "day": us.USAGE_GROUP_BY_DAY,
    "session": us.USAGE_GROUP_BY_SESSION,
}


def add_parser(commands: Any) -> None:
    usage = commands.add_parser(
        "usage", help="the tenant's token totals of the turns that ended in a time range"
    )
    usage.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="ISO date or time (UTC unless it says), e.g. 2026-05-01 (default: the beginning)",
    )
    usage.add_argument("--to", dest="end", metavar="TIME", help="ISO date or time, excluded")
    usage.add_argument("--by", choices=sorted(_GROUPS), help="totals per model, UTC day or session")
    usage.add_argument("--json", action="store_true", help="the GetUsage response as JSON")
    add_connection_arguments(usage)
    usage.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    start, end = _time(args.start, "--from"), _time(args.end, "--to")
    return asyncio.run(_run(args, start, end))


async def _run(args: argparse.Namespace, start: datetime | None, end: datetime | None) -> int:
    async with connect(args) as client:
        report = await client.get_usage(
            start=start,
            end=end,
            group_by=_GROUPS[args.by] if args.by else us.USAGE_GROUP_BY_UNSPECIFIED,
        )
    if args.json:
        json.dump(
            json_format.MessageToDict(report, preserving_proto_field_name=True),
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    rows = [_row(group.key, group.usage) for group in report.groups]
    rows.append(_row("total", report.total))
    print_table(
        (args.by.upper() if args.by else "", "TURNS", "PROMPT", "COMPLETION", "TOTAL"), rows
    )
    return 0


def _row(key: str, usage: us.UsageTotals) -> tuple[str, ...]:
    return (
        key,
        str(usage.turns),
        str(usage.prompt_tokens),
        str(usage.completion_tokens),
        str(usage.total_tokens),
    )


def _time(raw: str | None, flag: str) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{flag} {raw!r}: not an ISO date or time (e.g. 2026-05-01)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
