"""The orchestrator's decision: which specialist takes a session's first message."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum

from agent_runtime.domain.agents import AgentCatalogue
from agent_runtime.domain.text import well_formed

FALLBACK_AGENT = "coder"


class RoutingMethod(Enum):
    MODEL = "model"
    KEYWORDS = "keywords"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    agent: str
    confidence: float
    reason: str
    method: RoutingMethod


def classification_prompt(catalogue: AgentCatalogue) -> str:
    """What the orchestrator tells the model, listing the specialists it may choose."""
    lines = [f"- {p.name}: {p.description}" for p in catalogue.specialists()]
    return (
        "Choose the agent best suited to the user's request. Agents:\n"
        + "\n".join(lines)
        + '\nAnswer with JSON only: {"agent": "<name>", "confidence": <0..1>, '
        '"reason": "<short reason>"}'
    )


def parse_routing_answer(text: str, catalogue: AgentCatalogue) -> RoutingDecision | None:
    """The model's JSON answer, or None when it is unusable (not JSON, unknown agent...)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        answer = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    agent = answer.get("agent")
    specialists = {p.name for p in catalogue.specialists()}
    if not isinstance(agent, str) or agent.strip().lower() not in specialists:
        return None
    confidence = answer.get("confidence", 0.5)
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        confidence = 0.5
    reason = answer.get("reason")
    return RoutingDecision(
        agent.strip().lower(),
        min(max(float(confidence), 0.0), 1.0),
        # Decoded from the model's text: a "\ud800" escape makes a lone surrogate.
        well_formed(reason) if isinstance(reason, str) and reason else "chosen by the model",
        RoutingMethod.MODEL,
    )


def route_by_keywords(message: str, catalogue: AgentCatalogue) -> RoutingDecision:
    """The specialist whose keywords the message mentions most; the fallback agent if none."""
    lowered = message.lower()
    best, best_hits = None, 0
    for profile in catalogue.specialists():
        hits = sum(
            1 for word in profile.routing_keywords if re.search(rf"\b{re.escape(word)}\b", lowered)
        )
        if hits > best_hits:
            best, best_hits = profile, hits
    if best is not None:
        return RoutingDecision(
            best.name,
            min(0.3 + 0.1 * best_hits, 0.9),
            f"keyword match ({best_hits})",
            RoutingMethod.KEYWORDS,
        )
    fallback = FALLBACK_AGENT if FALLBACK_AGENT in catalogue.profiles else catalogue.default_agent
    return RoutingDecision(fallback, 0.0, "no usable routing signal", RoutingMethod.DEFAULT)
