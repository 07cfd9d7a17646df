"""The server's commands, `serve` and `migrate`: their settings (flags over the environment),
and what each failure to start means as an exit status. cli.py imports this module only for
them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from agent_runtime import bootstrap
from agent_runtime.config import ConfigError, Settings, variables
from agent_runtime.domain.errors import StorageUnavailable
from agent_runtime.infrastructure.agents_file import AgentsFileError
from agent_runtime.infrastructure.observability.logs import configure_logging


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings; a flag given wins over the variable it is named after."""
    known = variables()
    flags = {f"AGENT_RUNTIME_{dest.upper()}": value for dest, value in vars(args).items()}
    return Settings.from_env(
        {name: value for name, value in flags.items() if name in known and value is not None}
    )


def run(args: argparse.Namespace) -> int:
    """`serve` or `migrate` with these parsed arguments; the process's exit status."""
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"agent-runtime: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    try:
        if args.command == "migrate":
            asyncio.run(bootstrap.migrate(settings))
            logging.getLogger("agent_runtime").info("database is at the newest schema")
        else:
            asyncio.run(bootstrap.serve(settings))
    except KeyboardInterrupt:
        return 130
    except (AgentsFileError, ConfigError) as exc:
        print(f"agent-runtime: {exc}", file=sys.stderr)
        return 2
    except (OSError, StorageUnavailable) as exc:
        # Start-up reaches the database first: refused, unreachable, unreadable.
        print(
            f"agent-runtime: cannot use the database (AGENT_RUNTIME_DATABASE_URL): {exc}",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as exc:
        # e.g. the listen address cannot be bound
        print(f"agent-runtime: {exc}", file=sys.stderr)
        return 1
    return 0
