"""OpenTelemetry tracing, optional: the `otel` extra installs it, configuration turns it on.

Spans go to an OTLP/gRPC collector configured by the standard OTEL_* variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_BSP_SCHEDULE_DELAY, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "agent-runtime"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_requested(env: Mapping[str, str], enabled_setting: bool) -> bool:
    """On when our setting says so or an OTLP endpoint is configured, unless the standard
    OTEL_SDK_DISABLED says no."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return enabled_setting or any(env.get(name) for name in _ENDPOINT_VARIABLES)


def otlp_tracer_provider(env: Mapping[str, str]) -> TracerProvider:
    """A tracer provider that batches spans to the configured OTLP endpoint."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "tracing is configured but OpenTelemetry is not installed: "
            "pip install 'agent-runtime[otel]'"
        ) from exc
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; what it is given wins over those.
    name = env.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
