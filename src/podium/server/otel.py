"""OpenTelemetry for the server, with the GenAI semantic conventions (optional: ``pip install 'podium[otel]'``).

Each finished run becomes a span (``chat {model}``) with a child span per model call, built from
the run's trace (each turn's start and end times), so the engine needs no tracing code:

- attributes: ``gen_ai.operation.name`` (``chat``), ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.provider.name``, and ``podium.*`` (trace id, kind, role, status);
- metrics: ``gen_ai.client.token.usage`` (``gen_ai.token.type`` input/output) and
  ``gen_ai.client.operation.duration`` (seconds), per model call.

Turned on by ``create_app(telemetry=Telemetry(...))``, or by the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP over HTTP; ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and the
other standard variables work too). Nothing is imported unless it is on.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import missing_extra
from ..types import Role, RunResult, Turn


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class Telemetry:
    """Spans and GenAI metrics of finished runs, on the given (or the global) OpenTelemetry providers."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise missing_extra("opentelemetry-sdk", "otel") from None
        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("podium.server")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("podium.server")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used by each model call."
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of each model call."
        )
        self.providers = (tracer_provider, meter_provider)

    def record(self, model: str, result: RunResult) -> None:
        """Emit the run's span, one child span per model call, and the GenAI metrics."""
        start = result.started_at
        end = start + result.latency_s
        served = next((t.model for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": sum(t.prompt_tokens for t in result.turns),
            "gen_ai.usage.output_tokens": sum(t.completion_tokens for t in result.turns),
            "podium.trace_id": result.run_id,
            "podium.kind": "model" if result.coordinator == "passthrough" else "tier",
            "podium.status": result.status.value,
        }
        if served:
            attributes["gen_ai.response.model"] = served
        span = self.tracer.start_span(f"chat {model}", start_time=_ns(start), attributes=attributes)
        context = self._trace.set_span_in_context(span)
        for turn in result.turns:
            self._turn(turn, context, start, end)
        if result.answer is None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, result.reason[:200]))
        span.end(end_time=_ns(end))

    def _turn(self, turn: Turn, context: Any, run_start: float, run_end: float) -> None:
        begin = turn.started_at or run_start
        finish = turn.ended_at or min(run_end, begin + turn.latency_s)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": turn.model,
            "gen_ai.response.model": turn.model,
            "gen_ai.provider.name": turn.provider or "unknown",
            "gen_ai.usage.input_tokens": turn.prompt_tokens,
            "gen_ai.usage.output_tokens": turn.completion_tokens,
            "podium.role": turn.role.value,
        }
        child = self.tracer.start_span(
            f"chat {turn.model}", context=context, start_time=_ns(begin), attributes=attributes
        )
        if turn.error:
            child.set_status(self._trace.Status(self._trace.StatusCode.ERROR, turn.error[:200]))
        child.end(end_time=_ns(max(finish, begin)))
        common = {"gen_ai.operation.name": "chat", "gen_ai.request.model": turn.model}
        self.tokens.record(turn.prompt_tokens, {**common, "gen_ai.token.type": "input"})
        self.tokens.record(turn.completion_tokens, {**common, "gen_ai.token.type": "output"})
        self.duration.record(max(0.0, finish - begin), common)


def from_env() -> Telemetry | None:
    """OTLP/HTTP export when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces variant) is set, else None."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise missing_extra("opentelemetry-exporter-otlp-proto-http", "otel") from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "podium")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    return Telemetry(tracer_provider, meter_provider)


def shutdown(telemetry: Telemetry | None) -> None:
    """Flush and stop the providers this module created (the server's shutdown)."""
    for provider in telemetry.providers if telemetry else ():
        if provider is not None and hasattr(provider, "shutdown"):
            provider.shutdown()
