"""Prometheus metrics for ``GET /metrics``: requests, latency, tokens, cost and errors.

Labels: ``model`` is what the client asked for (a tier or a pool model); ``pool_model`` is the
pool model that did the work (a tier run spreads over several). Each app has its own registry,
so several apps in one process (tests) never share counters.

Also: time to first token of streamed answers, each upstream call's latency per pool model, the
requests in flight, and each endpoint's circuit-breaker state (read when scraped:
0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import missing_extra
from ..types import RunResult

log = logging.getLogger("podium.server")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class BreakerCollector:
    """``podium_breaker_state{endpoint}``, read from the breaker registry at each scrape."""

    def __init__(self, prom: Any, breakers: Callable[[], dict[str, Any]]) -> None:
        self.prom, self.breakers = prom, breakers

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "podium_breaker_state", "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.", labels=["endpoint"]
        )
        for key, breaker in sorted(self.breakers().items()):
            state = getattr(getattr(breaker, "state", None), "value", "closed")
            family.add_metric([key], BREAKER_STATES.get(state, 0))
        yield family


class Metrics:
    """The server's counters and histograms."""

    def __init__(self, breakers: Callable[[], dict[str, Any]] | None = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise missing_extra("prometheus-client", "server") from None
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._request_metrics(prom, self.registry)
        self._call_metrics(prom, self.registry)
        if breakers is not None:
            self.registry.register(BreakerCollector(prom, breakers))
        self.telemetry: Any = None  # podium.server.otel.Telemetry, when OpenTelemetry is on

    def _request_metrics(self, prom: Any, r: Any) -> None:
        """Requests, their latency, tokens and cost (registered in this order)."""
        self.requests = prom.Counter(
            "podium_requests",
            "Chat completion requests by requested model and HTTP status.",
            ["model", "kind", "status"],
            registry=r,
        )
        self.latency = prom.Histogram(
            "podium_request_latency_seconds",
            "Time to the end of a chat completion.",
            ["model", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = prom.Counter(
            "podium_tokens",
            "Tokens by requested model, pool model and type.",
            ["model", "pool_model", "type"],
            registry=r,
        )
        self.cost = prom.Counter(
            "podium_cost_usd", "Cost in USD by requested model and pool model.", ["model", "pool_model"], registry=r
        )

    def _call_metrics(self, prom: Any, r: Any) -> None:
        """Turns, errors, time to first token, upstream latency and requests in flight (in this order)."""
        self.turns = prom.Counter(
            "podium_turns",
            "Model turns by requested model, pool model and role.",
            ["model", "pool_model", "role"],
            registry=r,
        )
        self.errors = prom.Counter(
            "podium_errors",
            "Errors: failed requests by type, failed turns by pool model.",
            ["model", "pool_model", "type"],
            registry=r,
        )
        self.ttft = prom.Histogram(
            "podium_time_to_first_token_seconds",
            "Streamed answers: time from the request to the first answer text sent.",
            ["model", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = prom.Histogram(
            "podium_upstream_latency_seconds",
            "Each model call's latency, by pool model (retries included).",
            ["pool_model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = prom.Gauge("podium_requests_in_flight", "Chat completion requests being answered.", registry=r)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus_client checks and locks on every call,
        and always hands back the same child for the same labels (nothing here removes one)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= 10_000:  # bounded, though label values are pool models and fixed words
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def first_token(self, model: str, kind: str, seconds: float) -> None:
        self._child(self.ttft, model, kind).observe(seconds)

    def watch_shared_state(self, *sources: object) -> None:
        """``podium_shared_state_fallbacks``: limit and breaker operations answered from this replica's
        local state because Redis was unreachable (0 without Redis)."""
        gauge = self._prom.Gauge(
            "podium_shared_state_fallbacks",
            "Shared-state operations answered locally because Redis was unreachable.",
            registry=self.registry,
        )
        gauge.set_function(lambda: float(sum(getattr(s, "fallbacks", 0) for s in sources if s is not None)))

    def request(self, model: str, kind: str, status: int, latency_s: float | None = None) -> None:
        """Count one finished request (and its latency when it ran)."""
        self._child(self.requests, model, kind, str(status)).inc()
        if latency_s is not None:
            self._child(self.latency, model, kind).observe(latency_s)

    def error(self, model: str, error_type: str, pool_model: str = "") -> None:
        self._child(self.errors, model, pool_model, error_type).inc()

    def run(self, model: str, result: RunResult) -> None:
        """Account every turn of a run, plus the coordinator's own tokens and cost (and export its
        spans when OpenTelemetry is on; a telemetry failure is logged, never the request's)."""
        if self.telemetry is not None:
            try:
                self.telemetry.record(model, result)
            except Exception as exc:
                log.warning("OpenTelemetry export of run %s failed: %s", result.run_id, exc)
        for t in result.turns:
            self._child(self.turns, model, t.model, t.role.value).inc()
            self._child(self.tokens, model, t.model, "prompt").inc(t.prompt_tokens)
            self._child(self.tokens, model, t.model, "completion").inc(t.completion_tokens)
            self._child(self.cost, model, t.model).inc(t.cost_usd)
            if t.latency_s:
                self._child(self.upstream, t.model).observe(t.latency_s)
            if t.error:
                self.error(model, "turn_failed", t.model)
        orchestration = result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        if orchestration:
            self._child(self.tokens, model, "(coordinator)", "orchestration").inc(orchestration)
            self._child(self.cost, model, "(coordinator)").inc(result.orchestration_cost_usd)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
