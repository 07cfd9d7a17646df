"""Prometheus metrics: one registry per runtime (never the global one), so several runtimes
in one process (tests) keep separate numbers. README, "Operations", lists every metric."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds: from a fast commit to a long streaming turn.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LONG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class PrometheusMetrics:
    """Implements the application's RuntimeMetrics and the api's RpcMetrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._rpcs = Counter(
            "agent_runtime_rpcs",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self._rpc_seconds = Histogram(
            "agent_runtime_rpc_duration_seconds",
            "RPC duration (a stream: until it ended)",
            ["method"],
            buckets=_LONG_BUCKETS,
            registry=r,
        )
        self._streams = Gauge(
            "agent_runtime_active_streams",
            "Server-streaming RPCs open now",
            ["method"],
            registry=r,
        )
        self._turns = Counter(
            "agent_runtime_turns",
            "Turns ended, by outcome (stop reason)",
            ["outcome"],
            registry=r,
        )
        self._turn_seconds = Histogram(
            "agent_runtime_turn_duration_seconds",
            "Turn duration, by outcome",
            ["outcome"],
            buckets=_LONG_BUCKETS,
            registry=r,
        )
        self._first_token = Histogram(
            "agent_runtime_model_time_to_first_token_seconds",
            "From sending a model request to its first output",
            buckets=_LONG_BUCKETS,
            registry=r,
        )
        self._model_seconds = Histogram(
            "agent_runtime_model_call_duration_seconds",
            "Model call duration, by outcome",
            ["outcome"],
            buckets=_LONG_BUCKETS,
            registry=r,
        )
        self._tokens = Counter(
            "agent_runtime_model_tokens",
            "Tokens the model reported: direction in (prompt) or out (completion)",
            ["direction"],
            registry=r,
        )
        self._tenant_tokens = Counter(
            "agent_runtime_tenant_tokens",
            "Tokens of ended turns, counted once per turn when it ends: by tenant, model and "
            "direction in (prompt) or out (completion)",
            ["tenant", "model", "direction"],
            registry=r,
        )
        self._commit_seconds = Histogram(
            "agent_runtime_db_commit_duration_seconds",
            "Database commit latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._pending_approvals = Gauge(
            "agent_runtime_pending_approvals",
            "Approvals waiting for a decision (whole database, sampled periodically)",
            registry=r,
        )

    # -- RpcMetrics (api) --

    def rpc_started(self, method: str, streaming: bool) -> None:
        if streaming:
            self._streams.labels(method).inc()

    def rpc_finished(self, method: str, code: str, seconds: float, streaming: bool) -> None:
        if streaming:
            self._streams.labels(method).dec()
        self._rpcs.labels(method, code).inc()
        self._rpc_seconds.labels(method).observe(seconds)

    # -- RuntimeMetrics (application) --

    def turn_finished(self, outcome: str, seconds: float) -> None:
        self._turns.labels(outcome).inc()
        self._turn_seconds.labels(outcome).observe(seconds)

    def model_first_token(self, seconds: float) -> None:
        self._first_token.observe(seconds)

    def model_call_finished(self, outcome: str, seconds: float) -> None:
        self._model_seconds.labels(outcome).observe(seconds)

    def tokens_used(self, prompt: int, completion: int) -> None:
        self._tokens.labels("in").inc(prompt)
        self._tokens.labels("out").inc(completion)

    def usage_counted(self, tenant_id: str, model: str, prompt: int, completion: int) -> None:
        self._tenant_tokens.labels(tenant_id, model, "in").inc(prompt)
        self._tenant_tokens.labels(tenant_id, model, "out").inc(completion)

    def pending_approvals(self, count: int) -> None:
        self._pending_approvals.set(count)

    # -- the unit of work --

    def commit_finished(self, seconds: float) -> None:
        self._commit_seconds.observe(seconds)


class MetricsHttpServer:
    """Serves a registry at http://host:port/metrics from a thread of its own."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry
            )
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot serve metrics on {listen!r}: {exc}") from exc

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        server: WSGIServer = self._server
        server.shutdown()
        server.server_close()
        thread: threading.Thread = self._thread
        thread.join()
