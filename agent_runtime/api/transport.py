"""How the gRPC server talks on the wire: TLS credentials and HTTP/2 transport options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files. With a client CA, clients must present a certificate it signed (mTLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    def server_credentials(self) -> grpc.ServerCredentials:
        """Reads the files now; an unreadable one raises OSError naming it."""
        key = Path(self.key_file).read_bytes()
        chain = Path(self.cert_file).read_bytes()
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class Transport:
    """HTTP/2 settings of the server; the defaults suit long-lived streams.

    Keepalive: the server pings a connection that has been quiet for `keepalive_time_ms` and
    drops it when no answer comes within `keepalive_timeout_ms`, so a client that vanished
    (laptop lid closed, NAT entry expired) does not hold its stream for hours; with
    `max_pings_without_data` 0 it keeps pinging through a long silence (a turn waiting for a
    slow model, an idle WatchEvents). Clients may ping too, as often as every
    `min_ping_interval_ms` and, if `permit_without_calls`, with no call open.
    """

    max_receive_message_bytes: int = 4 * 1024 * 1024
    max_send_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    keepalive_permit_without_calls: bool = True
    min_ping_interval_ms: int = 10_000
    max_pings_without_data: int = 0
    # Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
    # the client queues beyond it). None: gRPC's default, no limit per connection.
    max_concurrent_streams_per_connection: int | None = None

    def options(self) -> list[tuple[str, int]]:
        options = [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_ping_interval_ms),
            ("grpc.http2.max_pings_without_data", self.max_pings_without_data),
        ]
        if self.max_concurrent_streams_per_connection is not None:
            options.append(
                ("grpc.max_concurrent_streams", self.max_concurrent_streams_per_connection)
            )
        return options
