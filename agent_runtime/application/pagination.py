"""Opaque page tokens. Clients must treat them as opaque; the format may change."""

from __future__ import annotations

import base64
import binascii

from agent_runtime.domain.errors import InvalidInput

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_PREFIX = "pos:"


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidInput.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_position_token(position: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{position}".encode()).decode().rstrip("=")


def decode_position_token(token: str) -> int:
    """The position a page token stands for; 0 for the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if raw.startswith(_PREFIX):
            position = int(raw[len(_PREFIX) :])
            if position >= 0:
                return position
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput.field(
        "page_token", "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
    )
