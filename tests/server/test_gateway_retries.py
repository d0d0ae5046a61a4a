"""No retry storms: a failed run is executed once per client call with the openai SDK's default
retries (counted on a real upstream and in the trace store), budgets too small for any call are a
400 ``budget_exceeded``, and every response carries ``x-request-id``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from faults.server import FaultServer  # noqa: E402
from podium.pool import parse_pool  # noqa: E402
from podium.server.app import create_app  # noqa: E402
from podium.server.traces import Traces  # noqa: E402
from podium.traces.store import Store  # noqa: E402
from podium_process import PodiumServer  # noqa: E402

ASK = [{"role": "user", "content": "What is 17 * 23?"}]
TIERS = {
    "tiers": [
        {"name": "fails", "coordinator": "fixed", "max_turns": 2, "roles": ["worker"]},
        {"name": "pricey", "coordinator": "fixed", "max_turns": 2, "roles": ["worker"]},
    ]
}


def pool_config(url: str) -> dict[str, Any]:
    """``down``: every call is an HTTP 500 (one retry each, no breaker); ``solver``: a priced answer."""
    down = {
        "name": "down",
        "backend": "openai",
        "base_url": url,
        "model": "http:500",
        "max_retries": 1,
        "breaker_threshold": 0,
        "timeout_s": 2,
        "connect_timeout_s": 1,
        "roles": ["worker"],
    }
    solver = {
        "name": "solver",
        "backend": "scripted",
        "replies": ["391"],
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 1.0,
        "max_tokens": 1000,
        "roles": ["worker", "verifier", "thinker", "coordinator"],
    }
    return {"name": "retries", "models": [down, solver], "defaults": {"worker": "down"}}


@pytest.fixture(scope="module")
def upstream():
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: FaultServer, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("retries")
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(pool_config(upstream.url)))
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(yaml.safe_dump(TIERS))
    with PodiumServer(pool, tmp_path, args=["--tiers", str(tiers), "--log-level", "warning"]) as proc:
        yield proc


def sdk(url: str) -> openai.OpenAI:
    """The official client with its default retries (2), as users run it."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused")


def test_failed_passthrough_runs_once_per_client_call(served: PodiumServer, upstream: FaultServer) -> None:
    client, before, calls = sdk(served.url), len(served.runs()), upstream.requests_for("http:500")
    assert client.max_retries == 2  # the SDK default: without x-should-retry it would send each call 3 times
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="down", messages=ASK)
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert caught.value.response.headers["x-request-id"].startswith("req_")
        assert caught.value.code == "run_failed"
    assert len(served.runs()) == before + 3
    assert upstream.requests_for("http:500") - calls == 3 * 2  # per run: one call plus podium's own single retry


def test_failed_tier_run_runs_once_per_client_call(served: PodiumServer, upstream: FaultServer) -> None:
    client, before = sdk(served.url), len(served.runs())
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="fails", messages=ASK, extra_body={"podium": {"allowed_models": ["down"]}}
            )
    assert len(served.runs()) == before + 2


def test_budget_too_small_for_any_call_is_400_not_retried(served: PodiumServer) -> None:
    client, before = sdk(served.url), len(served.runs())
    tiny = {"podium": {"max_cost_usd": 1e-9, "allowed_models": ["solver"]}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="pricey", messages=ASK, extra_body=tiny)
    assert caught.value.code == "budget_exceeded" and "solver" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError):  # streamed: refused before the stream opens
        client.chat.completions.create(model="pricey", messages=ASK, extra_body=tiny, stream=True)
    assert len(served.runs()) == before  # refused before running
    ok = client.chat.completions.create(model="pricey", messages=ASK, extra_body={"podium": {"max_cost_usd": 0.01}})
    assert ok.choices[0].message.content  # the check does not refuse a budget that fits


async def test_budget_spent_before_an_answer_is_400(tmp_path: Path) -> None:
    """The pre-check passes (the worker fits) but a pricey thinker spends the budget first."""
    price = {"max_tokens": 1000, "roles": ["worker", "verifier"]}
    worker = {"name": "solver", "backend": "scripted", "replies": ["391"], **price}
    worker |= {"input_usd_per_mtok": 100.0, "output_usd_per_mtok": 100.0}  # worst case about $0.1 a call
    thinker = {"name": "thinker", "backend": "scripted", "replies": ["PLAN " * 800], "roles": ["thinker"]}
    thinker |= {"input_usd_per_mtok": 500.0, "output_usd_per_mtok": 500.0, "max_tokens": 1000}  # spends ~$0.55
    config = {"name": "t", "models": [worker, thinker], "defaults": {"thinker": "thinker", "worker": "solver"}}
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(yaml.safe_dump({"tiers": [{"name": "plan", "coordinator": "rules", "max_turns": 3}]}))
    app = create_app(parse_pool(yaml.safe_dump(config), "t"), tiers=tiers, traces=Traces(tmp_path / "p.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="plan", messages=ASK, extra_body={"podium": {"max_cost_usd": 0.6}}
            )
    assert caught.value.code == "budget_exceeded", caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert [r["status"] for r in Store.open(tmp_path / "p.db").runs(limit=None)] == ["budget_exhausted"]


async def test_request_id_on_every_response_and_echoed(tmp_path: Path) -> None:
    app = create_app(parse_pool(yaml.safe_dump(pool_config("http://127.0.0.1:9/v1")), "t"), traces=Traces(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        ok = await http.post("/v1/chat/completions", json={"model": "solver", "messages": ASK})
        bad = await http.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        mine = await http.get("/healthz", headers={"x-request-id": "client-id-7"})
        hostile = await http.get("/healthz", headers={"x-request-id": "a\tb" + "x" * 200})
    assert ok.status_code == 200 and bad.status_code == 400
    ids = {ok.headers["x-request-id"], bad.headers["x-request-id"]}
    assert len(ids) == 2 and all(i.startswith("req_") for i in ids)
    assert mine.headers["x-request-id"] == "client-id-7"
    assert hostile.headers["x-request-id"].startswith("req_")


async def test_cors_is_off_by_default_and_configurable(tmp_path: Path) -> None:
    pool = parse_pool(yaml.safe_dump(pool_config("http://127.0.0.1:9/v1")), "t")
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    for cors, allowed in ((None, None), (["https://app.example"], "https://app.example")):
        app = create_app(pool, traces=Traces(None), cors=cors)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            r = await http.options("/v1/chat/completions", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == allowed


async def test_open_circuits_answer_503_with_retry_after(tmp_path: Path) -> None:
    """Every endpoint the request may use has its circuit open: a retry after Retry-After can help."""
    with FaultServer() as faults:
        down = pool_config(faults.url)["models"][0] | {"model": "http:503", "breaker_threshold": 1}
        down |= {"breaker_open_s": 20, "max_retries": 0}
        pool = parse_pool(yaml.safe_dump({"name": "b", "models": [down]}), "t")
        app = create_app(pool, traces=Traces(None))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0)
            with pytest.raises(openai.InternalServerError) as first:  # the call whose failure opens the circuit
                await client.chat.completions.create(model="down", messages=ASK)
            with pytest.raises(openai.InternalServerError) as second:
                await client.chat.completions.create(model="down", messages=ASK)
        assert faults.requests_for("http:503") == 1  # the second call never reached the upstream
    assert first.value.status_code == 502  # this run failed on its own (and opened the circuit)
    assert first.value.response.headers["x-should-retry"] == "false"
    assert second.value.status_code == 503 and second.value.code == "upstream_unavailable"
    headers = second.value.response.headers
    assert 15 <= int(headers["Retry-After"]) <= 20 and "x-should-retry" not in headers
