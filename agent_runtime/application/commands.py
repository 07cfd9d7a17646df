"""Inputs to the use cases, already translated from the wire format."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SendUserMessage:
    session_id: str
    content: str
    client_message_id: str = ""
    agent: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class CreateSession:
    session_id: str = ""
    title: str = ""
    agent: str = ""


@dataclass(frozen=True, slots=True)
class ListMessages:
    session_id: str
    page_size: int = 0
    page_token: str = ""
