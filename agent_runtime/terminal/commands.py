"""The terminal commands as the command line sees them: their parsers and one way to run them."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any

from agent_runtime.client import AgentRuntimeError
from agent_runtime.terminal import chat, sessions, usage
from agent_runtime.terminal.options import UsageError


def add_parsers(commands: Any) -> None:
    chat.add_parser(commands)
    sessions.add_parser(commands)
    usage.add_parser(commands)


def is_terminal_command(args: argparse.Namespace) -> bool:
    return hasattr(args, "run")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 the server refused or could not be reached, 2 bad flags."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Text the terminal's encoding cannot show (a model's emoji on an ASCII terminal) is
        # printed as escapes, not a crash.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        code: int = args.run(args)
    except UsageError as error:
        print(f"agent-runtime: {error}", file=sys.stderr)
        return 2
    except AgentRuntimeError as error:
        print(f"agent-runtime: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `agent-runtime sessions show x | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    return code
