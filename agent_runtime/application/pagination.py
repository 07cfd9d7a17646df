"""Opaque page tokens (keyset cursors). Clients must treat them as opaque."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from agent_runtime.domain.errors import InvalidInput
from agent_runtime.domain.text import short_text_problem

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Message positions are 32-bit integers in the schema (PostgreSQL refuses a larger cursor).
MAX_POSITION = 2**31 - 1
# The key of a (time, key) cursor is a session or call id.
MAX_KEY_CHARS = 256


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items, whether more follow them, and how to make the token of
    the page that starts after any one of them (a page may be cut short: see
    api/page_bytes.py)."""

    items: list[T]
    more: bool
    token_after: Callable[[T], str]

    @classmethod
    def of(cls, rows: list[T], limit: int, token_after: Callable[[T], str]) -> Page[T]:
        """The page of `limit` items from `limit` + 1 rows read: one extra row tells whether
        another page exists, without a count query."""
        return cls(rows[:limit], len(rows) > limit, token_after)

    @property
    def next_page_token(self) -> str:
        """Empty when no items follow this page's."""
        return self.token_after(self.items[-1]) if self.more and self.items else ""

    def first(self, count: int) -> Page[T]:
        """The page cut to its first `count` items (more follow them, when it had more)."""
        if count >= len(self.items):
            return self
        return Page(self.items[:count], True, self.token_after)


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidInput.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode(kind: str, values: list[Any]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, kind: str, arity: int) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(raw, list) and len(raw) == arity + 1 and raw[0] == kind:
            return raw[1:]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput.field(
        "page_token", "is not a token this server issued for this list", reason="INVALID_PAGE_TOKEN"
    )


def encode_position_token(position: int, kind: str = "pos") -> str:
    return _encode(kind, [position])


def decode_position_token(token: str, kind: str = "pos", *, maximum: int = MAX_POSITION) -> int:
    """The position (or other whole-number key, up to `maximum`) a page token stands for; 0
    for the first page."""
    if not token:
        return 0
    (position,) = _decode(token, kind, 1)
    if isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= maximum:
        return position
    raise InvalidInput.field("page_token", "is malformed", reason="INVALID_PAGE_TOKEN")


def encode_key_token(kind: str, key: str) -> str:
    return _encode(kind, [key])


def decode_key_token(token: str, kind: str) -> str | None:
    """The key a page token continues after; None for the first page."""
    if not token:
        return None
    (key,) = _decode(token, kind, 1)
    if isinstance(key, str) and short_text_problem(key, MAX_KEY_CHARS) is None:
        return key
    raise InvalidInput.field("page_token", "is malformed", reason="INVALID_PAGE_TOKEN")


def encode_time_key_token(kind: str, at: datetime, key: str) -> str:
    return _encode(kind, [at.isoformat(), key])


def decode_time_key_token(token: str, kind: str) -> tuple[datetime, str] | None:
    """The (time, key) cursor of a page token; None for the first page."""
    if not token:
        return None
    at, key = _decode(token, kind, 2)
    try:
        if (
            isinstance(at, str)
            and isinstance(key, str)
            and short_text_problem(key, MAX_KEY_CHARS) is None
        ):
            moment = datetime.fromisoformat(at)
            if moment.tzinfo is not None:
                return moment.astimezone(UTC), key
    except (ValueError, OverflowError):
        pass
    raise InvalidInput.field("page_token", "is malformed", reason="INVALID_PAGE_TOKEN")
