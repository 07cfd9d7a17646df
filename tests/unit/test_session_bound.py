"""The bound on a session's size: who is refused, with what, and who is not."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from agent_runtime.api.mapping import session_to_proto, shown_session_bytes
from agent_runtime.application.session_bound import SessionBound
from agent_runtime.application.session_queries import SessionDetails
from agent_runtime.domain.approval import ApprovalGrant
from agent_runtime.domain.errors import InvalidInput, PreconditionFailed
from agent_runtime.domain.model import AgentSwitch, Session

NOW = datetime(2026, 5, 1, tzinfo=UTC)
SESSION = Session("s1", "coder", NOW, NOW)


def grant(number: int) -> ApprovalGrant:
    return ApprovalGrant(f"g{number}", "s1", "run", (("command", "x"),), NOW, "t1", "c1")


def characters(session: Session, grants: Sequence[ApprovalGrant]) -> int:
    """A measure easy to reason about: instructions' characters, 100 per grant."""
    return len(session.instructions) + 100 * len(grants)


BOUND = SessionBound(characters, max_bytes=1000)


def test_a_new_session_past_the_bound_is_refused_naming_what_it_sets() -> None:
    BOUND.check_new(dataclasses.replace(SESSION, instructions="i" * 1000))
    with pytest.raises(InvalidInput) as refused:
        BOUND.check_new(dataclasses.replace(SESSION, title="t", instructions="i" * 1001))
    assert refused.value.reason == "SESSION_TOO_LARGE"
    assert [v.field for v in refused.value.violations] == ["title", "instructions"]


def test_an_update_is_refused_when_it_grows_the_session_past_the_bound() -> None:
    before = dataclasses.replace(SESSION, instructions="i" * 500)
    after = dataclasses.replace(SESSION, instructions="i" * 600)
    grants = [grant(n) for n in range(5)]
    with pytest.raises(InvalidInput) as refused:
        BOUND.check_update(before, after, grants, frozenset({"instructions", "approval_grants"}))
    assert [v.field for v in refused.value.violations] == ["session.instructions"]
    # Under the bound, or no larger than it was (a session from before the bound shrinking).
    BOUND.check_update(before, after, grants[:4], frozenset({"instructions"}))
    BOUND.check_update(after, before, grants, frozenset({"instructions"}))


def test_a_grant_past_the_bound_is_a_failed_precondition_saying_the_sizes() -> None:
    full = dataclasses.replace(SESSION, instructions="i" * 900)
    BOUND.check_grant(full, [grant(1)])
    with pytest.raises(PreconditionFailed) as refused:
        BOUND.check_grant(full, [grant(1), grant(2)])
    assert refused.value.reason == "SESSION_TOO_LARGE"
    assert refused.value.metadata == {
        "session_id": "s1",
        "session_bytes": "1100",
        "max_session_bytes": "1000",
    }


def test_the_measure_is_the_session_as_get_session_sends_it_without_its_switches() -> None:
    session = dataclasses.replace(SESSION, title="t", instructions="i" * 100)
    switch = AgentSwitch("coder", "architect", "why", NOW)
    details = SessionDetails(session, [switch], 0, [grant(1)], 1)
    shown = session_to_proto(details)
    del shown.agent_history[:]
    shown.agent_switch_count = 0
    assert shown_session_bytes(session, [grant(1)]) == shown.ByteSize()
