"""Readiness: can this process serve? Checked at start-up and then periodically.

The health service reports what the last check found; a check that hangs (a database that
does not answer) counts as not ready once its timeout passes, so the checker never stalls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from agent_runtime.application.periodic import Bounded

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    # Why not, for the log ("" when ready).
    problem: str = ""


class ReadinessProbe(Protocol):
    async def check(self) -> Readiness: ...


class ReadinessListener(Protocol):
    async def readiness_changed(self, readiness: Readiness) -> None: ...


class ReadinessMonitor:
    def __init__(
        self, probe: ReadinessProbe, listener: ReadinessListener, *, timeout: float
    ) -> None:
        self.probe = Bounded(probe.check, timeout)
        self._listener = listener
        self.last: Readiness | None = None

    async def check(self) -> Readiness:
        """Probe once; tell the listener when the answer differs from the last one."""
        try:
            readiness = await self.probe()
        except TimeoutError as exc:
            readiness = Readiness(False, f"the check hangs: {exc}")
        except Exception as exc:  # a probe that breaks says "not ready", never stops checking
            readiness = Readiness(False, f"the check failed: {type(exc).__name__}: {exc}")
        if readiness != self.last:
            if readiness.ready:
                log.info("ready: serving")
            else:
                log.warning("not ready: %s", readiness.problem)
            await self._listener.readiness_changed(readiness)
            self.last = readiness
        return readiness
