"""TokenCalibration: how the runtime's token estimate compares with a session's model.

After each answer the model reports the prompt_tokens it counted; the ratio of that to the
runtime's raw estimate of the same prompt scales the next estimates of the session (an
average that follows the newest observations). Kept in memory, per process, for the most
recently used sessions: a session seen first (or again after a restart) starts at 1.0, which
is a quarter of the UTF-8 bytes per token.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_SESSIONS = 10_000
# A reported count this far off the estimate is taken as the server's quirk (cached prompts
# counted as 0, a count of something else), not as the tokenizer: clamped.
MIN_RATIO = 0.25
MAX_RATIO = 4.0
_WEIGHT_OF_NEWEST = 0.5


class TokenCalibration:
    def __init__(self, max_sessions: int = DEFAULT_SESSIONS) -> None:
        self._ratios: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_sessions

    def ratio(self, tenant_id: str, session_id: str) -> float:
        return self._ratios.get((tenant_id, session_id), 1.0)

    def observe(self, tenant_id: str, session_id: str, raw_estimate: int, reported: int) -> None:
        """The model counted `reported` prompt tokens where the raw estimate was
        `raw_estimate`."""
        if raw_estimate <= 0 or reported <= 0:
            return  # nothing to learn (a server that reports no usage)
        key = (tenant_id, session_id)
        observed = min(MAX_RATIO, max(MIN_RATIO, reported / raw_estimate))
        previous = self._ratios.pop(key, None)
        self._ratios[key] = (
            observed if previous is None else previous + _WEIGHT_OF_NEWEST * (observed - previous)
        )
        if len(self._ratios) > self._max:
            self._ratios.popitem(last=False)
