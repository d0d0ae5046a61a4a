"""The server's metrics are kept in plain dicts (:class:`podium.server.metrics.Family`), yet
``GET /metrics`` reads exactly as prometheus_client's own Counter, Histogram and Gauge write it."""

from __future__ import annotations

import math
import re
from typing import Any

import prometheus_client as prom
import pytest

from podium.server.metrics import LATENCY_BUCKETS, Family, Metrics
from podium.types import Role, RunResult, RunStatus, Turn

LATENCIES = [0.001, 0.005, 0.0051, 0.3, 2.5, 119.0, 500.0, 0.0]


def run_with(turns: list[Turn], orchestration: int = 0) -> RunResult:
    return RunResult(
        run_id="r-1",
        query="q",
        answer="a",
        status=RunStatus.ANSWERED,
        pool="p",
        coordinator="fixed",
        turns=turns,
        orchestration_prompt_tokens=orchestration,
        orchestration_cost_usd=0.25 if orchestration else 0.0,
    )


def turn(model: str, latency: float, error: str | None = None) -> Turn:
    return Turn(
        turn=1,
        role=Role.WORKER,
        model=model,
        prompt_tokens=7,
        completion_tokens=3,
        cost_usd=0.1,
        latency_s=latency,
        error=error,
    )


def twin(family: Family, registry: prom.CollectorRegistry) -> Any:
    """prometheus_client's own metric of ``family``'s name, help, labels and buckets."""
    if family.kind == "counter":
        return prom.Counter(family.name, family.doc, family.labels, registry=registry)
    return prom.Histogram(family.name, family.doc, family.labels, buckets=family.bounds, registry=registry)


def reference(ours: Metrics) -> prom.CollectorRegistry:
    """What prometheus_client's own metrics write for the operations :func:`exercise` performs."""
    r = prom.CollectorRegistry()
    requests, latency, tokens, cost, turns, errors, ttft, upstream = (
        twin(f, r)
        for f in (
            ours.requests,
            ours.latency,
            ours.tokens,
            ours.cost,
            ours.turns,
            ours.errors,
            ours.ttft,
            ours.upstream,
        )
    )
    in_flight = prom.Gauge("podium_requests_in_flight", "Chat completion requests being answered.", registry=r)
    for i, seconds in enumerate(LATENCIES):
        model = "tier-a" if i % 2 else "m1"
        requests.labels(model, "model", "200").inc()
        latency.labels(model, "model").observe(seconds)
        ttft.labels(model, "stream").observe(seconds / 2)
        for t in ("m1", "m2"):
            turns.labels(model, t, "worker").inc()
            tokens.labels(model, t, "prompt").inc(7)
            tokens.labels(model, t, "completion").inc(3)
            cost.labels(model, t).inc(0.1)
            if seconds:  # a turn without a latency is not observed
                upstream.labels(t).observe(seconds)
        errors.labels(model, "m2", "turn_failed").inc()
        tokens.labels(model, "(coordinator)", "orchestration").inc(5)
        cost.labels(model, "(coordinator)").inc(0.25)
    requests.labels("m1", "model", "429").inc()
    errors.labels("m1", "", "rate_limited").inc()
    in_flight.inc(2)
    return r


def exercise(metrics: Metrics) -> None:
    for i, seconds in enumerate(LATENCIES):
        model = "tier-a" if i % 2 else "m1"
        metrics.run(model, run_with([turn("m1", seconds), turn("m2", seconds, error="boom")], orchestration=5))
        metrics.request(model, "model", 200, seconds)
        metrics.first_token(model, "stream", seconds / 2)
    metrics.request("m1", "model", 429)
    metrics.error("m1", "rate_limited")
    metrics.in_flight += 2


def without_created(text: str) -> tuple[str, list[str]]:
    """The exposition without its ``_created`` values (times), and those lines' names and labels."""
    created = re.findall(r"^(\S+_created(?:\{[^}]*\})?) \S+$", text, flags=re.M)
    return re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.M), created


def test_the_exposition_is_prometheus_clients_own_to_the_line() -> None:
    metrics = Metrics()
    assert metrics.latency.bounds == (*LATENCY_BUCKETS, math.inf) == metrics.upstream.bounds
    exercise(metrics)
    ours, ours_created = without_created(metrics.render()[0].decode())
    theirs, theirs_created = without_created(prom.generate_latest(reference(metrics)).decode())
    assert ours == theirs
    assert ours_created == theirs_created and len(ours_created) > 20
    assert 'podium_requests_total{kind="model",model="m1",status="200"} 4.0' in ours


def test_created_series_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "True")
    metrics = Metrics()
    exercise(metrics)
    text = metrics.render()[0].decode()
    assert "_created" not in text and "podium_requests_total" in text


def test_created_series_follow_prometheus_clients_disable_function() -> None:
    # prometheus_client's own switch is a function as well as the variable read at its import
    import prometheus_client.metrics as prom_metrics

    was = prom_metrics._use_created
    prom.disable_created_metrics()
    try:
        metrics = Metrics()
        exercise(metrics)
        text = metrics.render()[0].decode()
        assert "_created" not in text and "podium_requests_total" in text
        assert text == prom.generate_latest(reference(metrics)).decode()
    finally:
        prom_metrics._use_created = was


def test_a_counter_refuses_a_negative_amount_and_a_nan_latency_counts_in_no_bucket() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="non-negative"):
        metrics.tokens.inc(("m", "p", "prompt"), -1)
    metrics.request("m", "model", 200, math.nan)
    text = metrics.render()[0].decode()
    assert 'podium_request_latency_seconds_count{kind="model",model="m"} 0.0' in text
    assert 'podium_request_latency_seconds_sum{kind="model",model="m"} NaN' in text
