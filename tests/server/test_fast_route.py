"""The chat route's fast path (podium.server.fastroute) answers exactly as the FastAPI route does.

Two apps on the same pool and keys, one with the fast path and one without, get the same requests
in the same order (valid ones, every kind of client error, keys missing, wrong, expired or over
their rate limit, other content types, streams): the status, headers, bodies, request-log lines
and metrics must be the same, volatile ids and timings aside. And the fast path must really bypass
FastAPI (its dependency solving is never called for a JSON chat request)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

import fastapi.routing

from podium.server.app import create_app
from podium.server.auth import hash_key
from podium.server.traces import Traces

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
JSON = "application/json"
VOLATILE = re.compile(r"(chatcmpl|run|req)_?-?[0-9a-f_]{8,}")


def keys_file(tmp_path: Path) -> Path:
    keys = [
        {"name": "ok", "sha256": hash_key("sk-ok")},
        {"name": "tight", "sha256": hash_key("sk-tight"), "rate_limit": {"requests_per_minute": 1, "burst": 3}},
        {"name": "old", "sha256": hash_key("sk-old"), "expires_at": "2020-01-01T00:00:00Z"},
        {"name": "eu-only", "sha256": hash_key("sk-eu-only"), "policy": {"allowed_regions": ["eu"]}},
    ]
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": keys}))
    return path


def chat(body: Any, key: str | None = "sk-ok", ctype: str | None = JSON, raw: bytes | None = None) -> dict[str, Any]:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    if ctype is not None:
        headers["content-type"] = ctype
    content = raw if raw is not None else json.dumps(body).encode()
    return {"method": "POST", "url": "/v1/chat/completions", "headers": headers, "content": content}


REQUESTS: list[dict[str, Any]] = [
    chat({"model": "eu-solver", "messages": ASK}),
    chat({"model": "podium", "messages": ASK}),
    chat({"model": "eu-solver", "messages": ASK, "n": 2, "temperature": 0.5}),
    chat({"model": "eu-solver", "messages": ASK}, key=None),
    chat({"model": "eu-solver", "messages": ASK}, key="sk-wrong"),
    chat({"model": "eu-solver", "messages": ASK}, key="sk-old"),
    chat({"model": "eu-solver", "messages": ASK}, ctype="application/json; charset=utf-8"),
    chat({"model": "eu-solver", "messages": ASK}, ctype="Application/JSON"),
    chat({"model": "eu-solver", "messages": ASK}, ctype="text/plain"),
    chat({"model": "eu-solver", "messages": ASK}, ctype=None),
    chat({"model": "eu-solver", "messages": ASK}, ctype="application/vnd.podium+json"),
    chat(None, raw=b"{not json"),
    chat(None, raw=b"{not json", key=None),
    chat(None, raw=b""),
    chat(None, raw=b"\xff\xfe{}"),
    chat(None, raw=b"null"),
    chat([1, 2]),
    chat("a string"),
    chat({"model": "eu-solver"}),
    chat({"model": "eu-solver", "messages": ASK, "temprature": 1}),
    chat({"model": "eu-solver", "messages": ASK, "temperature": 9, "top_p": 7}),
    chat({"model": "eu-solver", "messages": []}),
    chat({"model": "no-such-model", "messages": ASK}),
    chat({"model": "eu-solver", "messages": ASK, "podium": {"allowed_regions": ["us"]}}),
    chat({"model": "us-solver", "messages": ASK}, key="sk-eu-only"),
    chat({"model": "eu-solver", "messages": ASK, "max_tokens": 10_000_000}),
    chat({"model": "eu-solver", "messages": [{"role": "user", "content": "lone \ud800 surrogate"}]}),
    chat({"model": "eu-solver", "messages": ASK}, key="sk-tight"),
    chat({"model": "eu-solver"}, key="sk-tight"),  # invalid, after the key check: uses a token too
    chat({"model": "eu-solver", "messages": ASK}, key="sk-tight"),
    chat({"model": "eu-solver", "messages": ASK}, key="sk-tight"),  # over the burst: 429
    {"method": "GET", "url": "/v1/chat/completions", "headers": {"authorization": "Bearer sk-ok"}},
    {**chat({"model": "eu-solver", "messages": ASK}), "url": "/v1/chat/completions/"},
    chat({"model": "eu-solver", "messages": ASK, "stream": True}),
    chat({"model": "podium", "messages": ASK, "stream": True, "stream_options": {"include_usage": True}}),
]


def normal(text: str) -> str:
    """Ids, timings and costs that differ between two runs of the same request, blanked."""
    text = VOLATILE.sub("ID", text)
    text = re.sub(r'"(created|latency_s|latency_ms|ts|ttft_ms)": ?[0-9.":TZ+-]+', r'"\1": 0', text)
    return re.sub(r"retry in [0-9.]+s", "retry in Ns", text)  # 60.0s, or 59.9s on a loaded machine


def log_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in records if r.name == "podium.requests"]
    for line in lines:
        for volatile in ("ts", "latency_ms", "request_id", "trace_id", "trace_ids", "ttft_ms"):
            line.pop(volatile, None)
    return lines


def metric_lines(text: str) -> list[str]:
    keep = ("podium_requests_total", "podium_errors_total", "podium_tokens_total", "podium_runs_total")
    return sorted(line for line in text.splitlines() if line.startswith(keep))


async def answers(app: Any, caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    out = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for request in REQUESTS:
            caplog.clear()
            response = await client.request(**request)
            headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")}
            headers["x-podium-trace-id"] = "ID" if "x-podium-trace-id" in headers else None
            out.append(
                {
                    "request": request,
                    "status": response.status_code,
                    "headers": headers,
                    "body": normal(response.text),
                    "log": log_lines(caplog.records),
                }
            )
        metrics = await client.get("/metrics", headers={"authorization": "Bearer sk-ok"})
        out.append({"metrics": metric_lines(metrics.text)})
    return out


async def test_fast_path_answers_as_the_fastapi_route(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="podium.requests")
    keys = keys_file(tmp_path)
    fast = await answers(create_app(POOL, keys=keys, traces=Traces(tmp_path / "fast.db")), caplog)
    slow = await answers(create_app(POOL, keys=keys, traces=Traces(tmp_path / "slow.db"), fast_chat=False), caplog)
    assert len(fast) == len(slow) == len(REQUESTS) + 1
    for f, s in zip(fast, slow):
        assert f == s
    statuses = [a["status"] for a in fast[:-1]]
    assert statuses.count(200) >= 8 and {400, 401, 404, 405, 429} <= set(statuses)  # the corpus covers them
    assert all(a["log"] for a in fast[:-1])  # every request was logged
    assert "x-request-id" not in fast[0]["headers"]  # compared apart: present on every answer
    assert fast[-1]["metrics"]


async def test_json_chat_requests_bypass_fastapi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["request"].url.path)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    keys = keys_file(tmp_path)
    for fast_chat, expected in ((True, 0), (False, 1)):
        app = create_app(POOL, keys=keys, traces=Traces(tmp_path / f"{fast_chat}.db"), fast_chat=fast_chat)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            calls.clear()
            response = await client.request(**chat({"model": "eu-solver", "messages": ASK}))
            assert response.status_code == 200 and response.headers["x-request-id"]
            assert len(calls) == expected
            calls.clear()
            await client.request(**chat({"model": "eu-solver", "messages": ASK}, ctype="text/plain"))
            assert len(calls) == 1  # other content types are FastAPI's to answer


async def test_completion_bodies_are_their_schema_dump(tmp_path: Path) -> None:
    """A chat.completion is written as a dict (no models on the hot path): it must be exactly what
    the ChatCompletion schema, which the OpenAPI document shows, validates and dumps it to."""
    from podium.server.schemas import ChatCompletion

    app = create_app(POOL, keys=keys_file(tmp_path), traces=Traces(tmp_path / "t.db"))
    asks = [
        {"model": "eu-solver", "messages": ASK},
        {"model": "podium", "messages": ASK},
        {"model": "eu-solver", "messages": ASK, "n": 2, "seed": 3},
        {"model": "eu-solver", "messages": ASK, "max_tokens": 5},
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for ask in asks:
            response = await client.request(**chat(ask))
            assert response.status_code == 200, response.text
            body = response.json()
            assert ChatCompletion.model_validate(body).model_dump(mode="json") == body
            assert body["usage"]["cost"] == round(
                body["usage"]["cost_usd"] + body["usage"]["orchestration_cost_usd"], 8
            )


async def test_every_answer_passes_podiums_edges_a_500_included(tmp_path: Path) -> None:
    """podium's edges sit in front of FastAPI's own stack (podium.server.app.PodiumApp): a route's
    unexpected exception is answered by FastAPI's error layer inside them, so even that 500 carries
    the request id, as every other answer does."""
    app = create_app(POOL, keys=keys_file(tmp_path), traces=Traces(tmp_path / "t.db"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/boom", headers={"x-request-id": "trace-me-1"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
        assert response.headers["x-request-id"] == "trace-me-1"
        ok = await client.request(**chat({"model": "eu-solver", "messages": ASK}))
        assert ok.status_code == 200 and ok.headers["x-request-id"].startswith("req_")
