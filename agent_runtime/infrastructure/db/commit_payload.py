"""The payload of a commit's NOTIFY: who committed, and which tenant, session and turn.

JSON, e.g. {"v":1,"from":"replica-1","tenant":"acme","session":"s1","turn":"t1"}; "session"
and "turn" are null when a commit's events span several (a recovery interrupting several
turns): the receivers then wake every waiter of the tenant (or session). Tenant ids are at
most 64 characters, session and turn ids 128 and the sender's id is cut down to 128 below,
so a payload stays far under PostgreSQL's 8000-byte NOTIFY limit.
"""

from __future__ import annotations

import hashlib
import json

from agent_runtime.application.ports import CommitScope

VERSION = 1
MAX_ORIGIN_LENGTH = 128


def origin_of(instance_id: str) -> str:
    """How a process names itself in its payloads: its instance id, or a digest of a long one."""
    if len(instance_id) <= MAX_ORIGIN_LENGTH:
        return instance_id
    return "sha256:" + hashlib.sha256(instance_id.encode()).hexdigest()


def encode(scope: CommitScope, origin: str | None) -> str:
    return json.dumps(
        {
            "v": VERSION,
            "from": origin,
            "tenant": scope.tenant_id,
            "session": scope.session_id,
            "turn": scope.turn_id,
        },
        separators=(",", ":"),
    )


def decode(payload: str) -> tuple[str | None, CommitScope]:
    """(the sender's origin, the commit's scope); ValueError if it is not such a payload."""
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise ValueError(f"not a version {VERSION} object")
    origin, tenant, session, turn = (body.get(k) for k in ("from", "tenant", "session", "turn"))
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("no tenant")
    for name, value in (("from", origin), ("session", session), ("turn", turn)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name!r} is neither null nor a non-empty string")
    if turn is not None and session is None:
        raise ValueError("a turn without its session")
    return origin, CommitScope(tenant, session, turn)
