"""The channel of either client: TLS or plaintext, and reconnection paced like the retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from agent_runtime.client.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS to the server. PEM bytes; no root certificates: the system's trust store."""

    root_certificates: bytes | None = None
    # Both or neither: the client's certificate for mutual TLS.
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)  # never in a log line
    # Check the server's certificate against this name instead of the target's host.
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and the other way round")

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(read(ca_file), read(cert_file), read(key_file), server_name)


def open_channel(
    transport: Any,  # the grpc module (blocking) or grpc.aio: both open channels alike
    target: str,
    tls: TlsConfig | None,
    retry: RetryPolicy,
    options: Sequence[tuple[str, Any]] = (),
) -> Any:
    # After a lost connection the channel reconnects on this schedule; grpc's default (1 s,
    # growing to 120 s) would make our quicker retries fail at once against a closed channel.
    channel_options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", int(retry.initial_backoff * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(retry.initial_backoff * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(retry.max_backoff * 1000)),
        *options,
    ]
    if tls is None:
        return transport.insecure_channel(target, options=channel_options)
    if tls.server_name:
        channel_options.append(("grpc.ssl_target_name_override", tls.server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )
    return transport.secure_channel(target, credentials, options=channel_options)
