"""LocalEventSignal wakes the waiters of what a commit touched; the NOTIFY payload says what."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from agent_runtime.application.ports import EVERYTHING, CommitScope
from agent_runtime.domain.model import MAX_ID_LENGTH
from agent_runtime.infrastructure.db import commit_payload
from agent_runtime.infrastructure.event_signal import RECENT, LocalEventSignal

FOREVER = 3600.0
SHORT_WAIT = 0.05
TURN_X = CommitScope("tenant-a", "s1", "turn-x")
TURN_Y = CommitScope("tenant-a", "s1", "turn-y")
SESSION_1 = CommitScope("tenant-a", "s1")
SESSION_2 = CommitScope("tenant-a", "s2")
TENANT_A = CommitScope("tenant-a")
TENANT_B = CommitScope("tenant-b")
WAITERS = (TURN_X, TURN_Y, SESSION_1, SESSION_2, TENANT_A, TENANT_B, EVERYTHING)


def returns_without_waiting(wait: Coroutine[Any, Any, None]) -> bool:
    """Whether the wait returns at once: runs it to its end without giving the event loop a
    single turn. A wait that would wait is closed where it first yields, so no test hangs."""
    try:
        wait.send(None)
    except StopIteration:
        return True
    wait.close()
    return False


async def _woken_by(scope: CommitScope) -> set[CommitScope]:
    """The waiters (one per scope of WAITERS) that a notification for `scope` wakes."""
    signal = LocalEventSignal()
    generation = signal.generation()
    tasks = {
        waiter: asyncio.create_task(signal.wait(generation, FOREVER, waiter)) for waiter in WAITERS
    }
    await asyncio.sleep(0)  # every one of them waiting
    signal.notify(scope)
    signal.notify(CommitScope("sentinel"))  # wakes the EVERYTHING waiter at the latest
    await tasks[EVERYTHING]
    await asyncio.sleep(0)  # woken tasks finish in the same round as that one
    woken = {waiter for waiter, task in tasks.items() if task.done()}
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    return woken


@pytest.mark.parametrize(
    ("notified", "woken"),
    [
        (TURN_X, {TURN_X, SESSION_1, TENANT_A, EVERYTHING}),
        (SESSION_1, {TURN_X, TURN_Y, SESSION_1, TENANT_A, EVERYTHING}),
        (TENANT_A, {TURN_X, TURN_Y, SESSION_1, SESSION_2, TENANT_A, EVERYTHING}),
        (TENANT_B, {TENANT_B, EVERYTHING}),
        (EVERYTHING, set(WAITERS)),
    ],
)
async def test_a_notification_wakes_the_waiters_of_its_scope(
    notified: CommitScope, woken: set[CommitScope]
) -> None:
    assert await _woken_by(notified) == woken


async def test_a_notification_between_the_query_and_the_wait_is_not_missed() -> None:
    signal = LocalEventSignal()
    generation = signal.generation()
    assert not returns_without_waiting(signal.wait(generation, FOREVER, TURN_X))
    signal.notify(TURN_X)  # while the waiter queried
    assert returns_without_waiting(signal.wait(generation, FOREVER, TURN_X))


async def test_one_for_another_scope_in_between_is_no_reason_to_read_again() -> None:
    signal = LocalEventSignal()
    generation = signal.generation()
    signal.notify(TURN_Y)
    waiter = asyncio.create_task(signal.wait(generation, FOREVER, TURN_X))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiter.done()
    signal.notify(TURN_X)
    await waiter


async def test_a_waiter_further_behind_than_remembered_reads_again() -> None:
    signal = LocalEventSignal()
    generation = signal.generation()
    for _ in range(RECENT):
        signal.notify(TURN_Y)
    # All remembered, none of them for TURN_X: nothing to read again yet.
    assert not returns_without_waiting(signal.wait(generation, FOREVER, TURN_X))
    signal.notify(TURN_Y)
    # One more: the oldest is forgotten, and it cannot tell: it returns at once.
    assert returns_without_waiting(signal.wait(generation, FOREVER, TURN_X))


async def test_without_a_notification_the_wait_ends_at_max_wait() -> None:
    signal = LocalEventSignal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal.wait(signal.generation(), SHORT_WAIT, TURN_X)
    # The loop may run a timer up to its clock's resolution early, never later than that.
    assert loop.time() - started >= SHORT_WAIT - time.get_clock_info("monotonic").resolution


def test_the_payload_of_the_longest_ids_is_far_under_the_notify_limit() -> None:
    scope = CommitScope("t" * 64, "s" * 128, '\u00e9"\\\n' * (MAX_ID_LENGTH // 4))
    origin = commit_payload.origin_of("replica-" + "x" * 10_000)
    payload = commit_payload.encode(scope, origin)
    assert len(payload.encode()) < 2000
    assert commit_payload.decode(payload) == (origin, scope)
    assert json.loads(payload)["turn"] == scope.turn_id


def test_a_short_instance_id_names_itself_and_a_long_one_a_stable_digest() -> None:
    assert commit_payload.origin_of("replica-1") == "replica-1"
    long = "r" * 1000
    assert commit_payload.origin_of(long) == commit_payload.origin_of(long)
    assert commit_payload.origin_of(long) != commit_payload.origin_of(long + "2")
    assert len(commit_payload.origin_of(long)) <= commit_payload.MAX_ORIGIN_LENGTH
