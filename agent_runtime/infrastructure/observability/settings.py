"""Logs, metrics, tracing and health checks: what the operator sees.

A plain pydantic model: config.py reads it from AGENT_RUNTIME_<FIELD>, so a field's name is
its variable's name (README, "Operations: health, metrics, logs, tracing").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


class ObservabilitySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    # host:port of the Prometheus /metrics endpoint; "" serves none.
    metrics_listen: str = ""
    # Tracing also turns on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT).
    otel_enabled: bool = False
    # Readiness (database reachable, schema current) and the pending-approvals gauge.
    health_check_interval_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    health_check_timeout_seconds: float = Field(default=3.0, gt=0, allow_inf_nan=False)
