"""How the gRPC server talks on the wire: TLS credentials and HTTP/2 transport options.

Plain pydantic models: config.py reads TlsFiles from AGENT_RUNTIME_TLS_<FIELD> and Transport
from AGENT_RUNTIME_GRPC_<FIELD>, so a field's name is the rest of its variable's name.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt


class TlsFiles(BaseModel):
    """PEM files; without a certificate, no TLS. With a client CA, clients must present a
    certificate it signed (mTLS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Reads the files now; an unreadable one raises OSError naming it."""
        if self.cert_file is None or self.key_file is None:
            raise ValueError("TLS needs a certificate and its key")
        key = Path(self.key_file).read_bytes()
        chain = Path(self.cert_file).read_bytes()
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, chain)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


# gRPC's own default for one message.
MIN_MESSAGE_BYTES = 4 * 1024 * 1024


class Transport(BaseModel):
    """HTTP/2 settings of the server; the defaults suit long-lived streams.

    Keepalive: the server pings a connection that has been quiet for `keepalive_time_ms` and
    drops it when no answer comes within `keepalive_timeout_ms`, so a client that vanished
    (laptop lid closed, NAT entry expired) does not hold its stream for hours; with
    `max_pings_without_data` 0 it keeps pinging through a long silence (a turn waiting for a
    slow model, an idle WatchEvents). Clients may ping too, as often as every
    `min_ping_interval_ms` and, if `permit_without_calls`, with no call open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # None: room for the largest allowed content (with_room_for), at least MIN_MESSAGE_BYTES.
    max_receive_message_bytes: PositiveInt | None = None
    max_send_message_bytes: PositiveInt | None = None
    keepalive_time_ms: PositiveInt = 60_000
    keepalive_timeout_ms: PositiveInt = 20_000
    keepalive_permit_without_calls: bool = True
    min_ping_interval_ms: PositiveInt = 10_000
    # 0: no limit.
    max_pings_without_data: NonNegativeInt = 0
    # Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
    # the client queues beyond it). None: gRPC's default, no limit per connection.
    max_concurrent_streams_per_connection: PositiveInt | None = None

    def with_room_for(self, content_bytes: int) -> Transport:
        """The message limits left unset made at least 4 MiB and twice `content_bytes` (the
        largest user message: a request carries its content and more)."""
        room = max(MIN_MESSAGE_BYTES, content_bytes * 2)
        return self.model_copy(
            update={
                "max_receive_message_bytes": self.max_receive_message_bytes or room,
                "max_send_message_bytes": self.max_send_message_bytes or room,
            }
        )

    def options(self) -> list[tuple[str, int]]:
        receive = self.max_receive_message_bytes or MIN_MESSAGE_BYTES
        send = self.max_send_message_bytes or MIN_MESSAGE_BYTES
        options = [
            ("grpc.max_receive_message_length", receive),
            ("grpc.max_send_message_length", send),
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
