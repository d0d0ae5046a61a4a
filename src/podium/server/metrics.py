"""Prometheus metrics for ``GET /metrics``: requests, latency, tokens, cost and errors.

Labels: ``model`` is what the client asked for (a tier or a pool model); ``pool_model`` is the
pool model that did the work (a tier run spreads over several). Each app has its own registry,
so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

from ..errors import missing_extra
from ..types import RunResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The server's counters and histograms."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise missing_extra("prometheus-client", "server") from None
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
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
        self.requests.labels(model, kind, str(status)).inc()
        if latency_s is not None:
            self.latency.labels(model, kind).observe(latency_s)

    def error(self, model: str, error_type: str, pool_model: str = "") -> None:
        self.errors.labels(model, pool_model, error_type).inc()

    def run(self, model: str, result: RunResult) -> None:
        """Account every turn of a run, plus the coordinator's own tokens and cost."""
        for t in result.turns:
            self.turns.labels(model, t.model, t.role.value).inc()
            self.tokens.labels(model, t.model, "prompt").inc(t.prompt_tokens)
            self.tokens.labels(model, t.model, "completion").inc(t.completion_tokens)
            self.cost.labels(model, t.model).inc(t.cost_usd)
            if t.error:
                self.error(model, "turn_failed", t.model)
        orchestration = result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        if orchestration:
            self.tokens.labels(model, "(coordinator)", "orchestration").inc(orchestration)
            self.cost.labels(model, "(coordinator)").inc(result.orchestration_cost_usd)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
