"""Prometheus metrics for ``GET /metrics``: requests, latency, tokens, cost and errors.

Labels: ``model`` is what the client asked for (a tier or a pool model); ``pool_model`` is the
pool model that did the work (a tier run spreads over several). Each app has its own registry,
so several apps in one process (tests) never share counters.

Also: time to first token of streamed answers, each upstream call's latency per pool model, the
requests in flight, and each endpoint's circuit-breaker state (read when scraped:
0 closed, 1 half-open, 2 open).

Counters and histograms are podium's own :class:`Family` objects, written at a scrape exactly as
prometheus_client's ``Counter`` and ``Histogram`` write theirs (tests compare the two to the line).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
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


def _go_float(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class Family:
    """A counter or histogram kept in plain dicts, turned into prometheus_client's samples when
    scraped, written as its own ``Counter`` and ``Histogram`` write them (``_total``; ``_bucket``,
    ``_count``, ``_sum``; ``_created`` unless ``PROMETHEUS_DISABLE_CREATED_SERIES`` or
    prometheus_client's ``disable_created_metrics()`` turned them off).

    prometheus_client takes a lock and walks its buckets in Python on every increment; a request
    made eight of those. Here an increment is a dict lookup and an addition: only the event loop
    adds, so nothing needs a lock, and a scrape reads a copy of the dict.
    """

    def __init__(self, kind: str, name: str, doc: str, labels: list[str], buckets: tuple[float, ...] = ()) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, labels
        self.bounds = (*map(float, buckets), math.inf) if kind == "histogram" else ()
        self.le = [_go_float(b) for b in self.bounds]  # each bucket's label, as prometheus_client writes it
        self.series: dict[tuple[str, ...], list[float]] = {}  # a counter: [total]; a histogram: [per bucket..., sum]
        self.created: dict[tuple[str, ...], float] = {}

    def _new(self, key: tuple[str, ...]) -> list[float]:
        self.created[key] = time.time()
        values = self.series[key] = [0.0] * (len(self.bounds) + 1 if self.bounds else 1)
        return values

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        (self.series.get(key) or self._new(key))[0] += amount

    def observe(self, key: tuple[str, ...], amount: float) -> None:
        values = self.series.get(key) or self._new(key)
        values[-1] += amount
        if amount <= math.inf:  # not NaN: the first bucket whose bound holds it, as prometheus_client counts
            values[bisect.bisect_left(self.bounds, amount)] += 1

    def metric(self, created: bool) -> Any:
        """The family and its samples, as prometheus_client's collectors hand them to the exposition."""
        from prometheus_client.core import Metric

        metric = Metric(self.name, self.doc, self.kind)
        for key, values in list(self.series.items()):
            labels = dict(zip(self.labels, key))
            if self.kind == "counter":
                metric.add_sample(self.name + "_total", labels, values[0])
            else:
                count = 0.0
                for le, n in zip(self.le, values):
                    count += n
                    metric.add_sample(self.name + "_bucket", {**labels, "le": le}, count)
                metric.add_sample(self.name + "_count", labels, count)
                metric.add_sample(self.name + "_sum", labels, values[-1])
            if created:
                metric.add_sample(self.name + "_created", labels, self.created[key])
        return metric


class Families:
    """The collector of podium's :class:`Family` objects, in the order given."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families
        # the variable as it is now (prometheus_client read it once, at its import), read as it reads it
        disabled = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower()
        self.env_allows_created = disabled not in ("true", "1", "t")

    def _created(self) -> bool:
        """Whether ``_created`` series are written: not when the variable said so when these families were
        made, nor when prometheus_client's own switch is off (its ``disable_created_metrics()``, or the
        variable as it was when prometheus_client was imported)."""
        from prometheus_client import metrics

        return self.env_allows_created and bool(getattr(metrics, "_use_created", True))

    def describe(self) -> list[Any]:
        from prometheus_client.core import Metric

        return [Metric(f.name, f.doc, f.kind) for f in self.families]

    def collect(self) -> Iterator[Any]:
        created = self._created()
        for family in self.families:
            yield family.metric(created)


class Metrics:
    """The server's counters and histograms."""

    def __init__(self, breakers: Callable[[], dict[str, Any]] | None = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise missing_extra("prometheus-client", "server") from None
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.registry.register(Families([*self._request_metrics(), *self._call_metrics()]))
        self.in_flight = 0  # chat completion requests being answered (the gauge reads it when scraped)
        gauge = prom.Gauge(
            "podium_requests_in_flight", "Chat completion requests being answered.", registry=self.registry
        )
        gauge.set_function(lambda: float(self.in_flight))
        if breakers is not None:
            self.registry.register(BreakerCollector(prom, breakers))
        self.telemetry: Any = None  # podium.server.otel.Telemetry, when OpenTelemetry is on

    def _request_metrics(self) -> list[Family]:
        """Requests, their latency, tokens and cost (exposed in this order)."""
        self.requests = Family(
            "counter",
            "podium_requests",
            "Chat completion requests by requested model and HTTP status.",
            ["model", "kind", "status"],
        )
        self.latency = Family(
            "histogram",
            "podium_request_latency_seconds",
            "Time to the end of a chat completion.",
            ["model", "kind"],
            LATENCY_BUCKETS,
        )
        self.tokens = Family(
            "counter",
            "podium_tokens",
            "Tokens by requested model, pool model and type.",
            ["model", "pool_model", "type"],
        )
        self.cost = Family(
            "counter", "podium_cost_usd", "Cost in USD by requested model and pool model.", ["model", "pool_model"]
        )
        return [self.requests, self.latency, self.tokens, self.cost]

    def _call_metrics(self) -> list[Family]:
        """Turns, errors, time to first token and upstream latency (exposed in this order)."""
        self.turns = Family(
            "counter",
            "podium_turns",
            "Model turns by requested model, pool model and role.",
            ["model", "pool_model", "role"],
        )
        self.errors = Family(
            "counter",
            "podium_errors",
            "Errors: failed requests by type, failed turns by pool model.",
            ["model", "pool_model", "type"],
        )
        self.ttft = Family(
            "histogram",
            "podium_time_to_first_token_seconds",
            "Streamed answers: time from the request to the first answer text sent.",
            ["model", "kind"],
            LATENCY_BUCKETS,
        )
        self.upstream = Family(
            "histogram",
            "podium_upstream_latency_seconds",
            "Each model call's latency, by pool model (retries included).",
            ["pool_model"],
            LATENCY_BUCKETS,
        )
        return [self.turns, self.errors, self.ttft, self.upstream]

    def first_token(self, model: str, kind: str, seconds: float) -> None:
        self.ttft.observe((model, kind), seconds)

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
        self.requests.inc((model, kind, str(status)))
        if latency_s is not None:
            self.latency.observe((model, kind), latency_s)

    def error(self, model: str, error_type: str, pool_model: str = "") -> None:
        self.errors.inc((model, pool_model, error_type))

    def run(self, model: str, result: RunResult) -> None:
        """Account every turn of a run, plus the coordinator's own tokens and cost (and export its
        spans when OpenTelemetry is on; a telemetry failure is logged, never the request's)."""
        if self.telemetry is not None:
            try:
                self.telemetry.record(model, result)
            except Exception as exc:
                log.warning("OpenTelemetry export of run %s failed: %s", result.run_id, exc)
        for t in result.turns:
            self.turns.inc((model, t.model, t.role.value))
            self.tokens.inc((model, t.model, "prompt"), t.prompt_tokens)
            self.tokens.inc((model, t.model, "completion"), t.completion_tokens)
            self.cost.inc((model, t.model), t.cost_usd)
            if t.latency_s:
                self.upstream.observe((t.model,), t.latency_s)
            if t.error:
                self.error(model, "turn_failed", t.model)
        orchestration = result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        if orchestration:
            self.tokens.inc((model, "(coordinator)", "orchestration"), orchestration)
            self.cost.inc((model, "(coordinator)"), result.orchestration_cost_usd)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
