"""Connection flags shared by the terminal commands: target, API key, TLS."""

from __future__ import annotations

import argparse
import os

from agent_runtime.client import DEFAULT_TARGET, AgentRuntimeClient, TlsConfig

TARGET_VARIABLE = "AGENT_RUNTIME_TARGET"
API_KEY_VARIABLE = "AGENT_RUNTIME_API_KEY"


class UsageError(Exception):
    """A flag's value cannot be used; the message says which and why."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET,
        help=f"the runtime's host:port ({TARGET_VARIABLE}; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE) or None,
        help=f"sent as 'authorization: Bearer <key>' ({API_KEY_VARIABLE}; "
        "prefer the variable: flags show in ps)",
    )
    group.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    group.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle to trust (implies --tls)")
    group.add_argument(
        "--tls-cert", metavar="FILE", help="PEM client certificate for mutual TLS (implies --tls)"
    )
    group.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="expect this name in the server's certificate"
    )


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    """TlsConfig from the flags (None: plaintext); UsageError for an incomplete or unreadable
    set."""
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        return TlsConfig.from_files(
            ca_file=args.tls_ca,
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            server_name=args.tls_server_name,
        )
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None


def connect(args: argparse.Namespace) -> AgentRuntimeClient:
    return AgentRuntimeClient(args.target, api_key=args.api_key, tls=tls_config(args))
