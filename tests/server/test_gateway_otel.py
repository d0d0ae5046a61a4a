"""OpenTelemetry with the GenAI semantic conventions: a span per run and per model call, the
``gen_ai.client.*`` metrics, checked with the SDK's in-memory exporter and against a real OTLP/HTTP
receiver on 127.0.0.1 configured only through the standard environment variable."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")
pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is in the 'otel' extra")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from podium.server.app import create_app  # noqa: E402
from podium.server.otel import Telemetry  # noqa: E402
from podium.server.otel import shutdown as otel_shutdown  # noqa: E402
from podium.server.traces import Traces  # noqa: E402

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]


def sdk(app) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0)


async def test_spans_and_genai_metrics_in_memory() -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    app = create_app(POOL, traces=Traces(None), telemetry=telemetry)
    raw = await sdk(app).chat.completions.with_raw_response.create(model="podium", messages=ASK)
    finished = spans.get_finished_spans()
    run = next(s for s in finished if s.name == "chat podium")
    calls = [s for s in finished if s.parent is not None and s.parent.span_id == run.context.span_id]
    assert run.attributes["gen_ai.operation.name"] == "chat"
    assert run.attributes["gen_ai.request.model"] == "podium"
    assert run.attributes["gen_ai.response.model"] == "eu-solver"
    assert run.attributes["podium.trace_id"] == raw.headers["x-podium-trace-id"]
    assert run.attributes["gen_ai.usage.input_tokens"] == sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls)
    assert {c.attributes["podium.role"] for c in calls} >= {"worker", "verifier"}
    assert all(run.start_time <= c.start_time <= c.end_time <= run.end_time for c in calls)
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= names


async def test_otlp_http_export_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        app = create_app(POOL, traces=Traces(None))
        assert app.state.metrics.telemetry is not None
        await sdk(app).chat.completions.create(model="eu-solver", messages=ASK)
        otel_shutdown(app.state.metrics.telemetry)  # what the server does on shutdown: flush
    finally:
        server.shutdown()
        server.server_close()
    traces = b"".join(body for path, body in received if path == "/v1/traces")
    metrics = b"".join(body for path, body in received if path == "/v1/metrics")
    assert b"gen_ai.request.model" in traces and b"eu-solver" in traces
    assert b"gen_ai.client.token.usage" in metrics


def test_off_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert create_app(POOL, traces=Traces(None)).state.metrics.telemetry is None


async def test_without_telemetry_fastapi_does_not_look_for_providers_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FastAPI (>= 0.165) asks OpenTelemetry for its three global providers on every request, to find
    them unset (≈ 9 µs): with podium's telemetry off it is told not to trace at all."""
    from opentelemetry import trace

    asked: list[int] = []
    real = trace.get_tracer_provider
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: asked.append(1) or real())
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    app = create_app(POOL, traces=Traces(None))
    for _ in range(3):
        await sdk(app).chat.completions.create(model="eu-solver", messages=ASK)
    assert asked == []
