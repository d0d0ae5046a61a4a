"""Observability with the real openai SDK: one JSON request line per request (no secrets), and
/metrics with time to first token, per-upstream latency, requests in flight and breaker states."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import yaml

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from faults.server import FaultServer  # noqa: E402
from podium.pool import parse_pool  # noqa: E402
from podium.server.app import create_app  # noqa: E402
from podium.server.auth import hash_key  # noqa: E402
from podium.server.traces import Traces  # noqa: E402

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
KEY = "sk-observed-secret-7d1e"


def keyed_app(tmp_path: Path, **kwargs):
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [{"name": "team-a", "sha256": hash_key(KEY)}]}))
    return create_app(POOL, keys=keys, traces=Traces(tmp_path / "p.db"), **kwargs)


def sdk(app) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key=KEY, http_client=http, max_retries=0)


async def test_one_json_line_per_request_without_secrets(tmp_path: Path) -> None:
    log_file = tmp_path / "requests.jsonl"
    app = keyed_app(tmp_path, request_log=log_file)
    client = sdk(app)
    await client.chat.completions.create(model="podium", messages=ASK)
    stream = await client.chat.completions.create(model="eu-solver", messages=ASK, stream=True)
    [c async for c in stream]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=ASK)
    await httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1").get("/healthz")
    logging.getLogger("podium.requests").handlers[-1].flush()
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 404),
        ("/healthz", 200),
    ]
    tier, streamed = lines[0], lines[1]
    assert tier["key"] == "team-a" and tier["model"] == "podium" and tier["kind"] == "tier"
    assert tier["served_model"] == "eu-solver" and tier["cost_usd"] > 0 and tier["trace_id"]
    assert tier["request_id"].startswith("req_") and tier["latency_ms"] > 0
    assert streamed["stream"] is True and streamed["ttft_ms"] > 0 and streamed["run_status"] == "answered"
    assert KEY not in text and "Bearer" not in text and "17 * 23" not in text


async def test_metrics_have_ttft_upstream_latency_in_flight_and_breakers(tmp_path: Path) -> None:
    with FaultServer() as faults:
        config = {
            "name": "obs",
            "models": [
                {"name": "down", "backend": "openai", "base_url": faults.url, "model": "http:503", "max_retries": 0}
                | {"breaker_threshold": 1, "breaker_open_s": 60},
                {"name": "up", "backend": "openai", "base_url": faults.url, "model": "ok", "max_retries": 0},
            ],
        }
        app = create_app(parse_pool(yaml.safe_dump(config), "obs"), traces=Traces(None))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0)
        stream = await client.chat.completions.create(model="up", messages=ASK, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="down", messages=ASK)
        text = (await http.get("/metrics")).text
    assert 'podium_time_to_first_token_seconds_count{kind="model",model="up"} 1.0' in text
    assert 'podium_upstream_latency_seconds_count{pool_model="up"} 1.0' in text
    assert "podium_requests_in_flight 0.0" in text
    breakers = [line for line in text.splitlines() if line.startswith("podium_breaker_state{")]
    assert any(line.endswith(" 2.0") for line in breakers), breakers  # down's endpoint: open
