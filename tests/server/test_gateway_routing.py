"""OpenRouter's routing fields with the real openai SDK: a per-request ``models`` fallback list and
``provider`` preferences (narrowing, never widening), per-model ``headers:`` (residency headers,
from the environment, never stored), and context windows enforced on tiers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
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
from recording_upstream import Recorded, recording_upstream  # noqa: E402

ASK = [{"role": "user", "content": "What is 17 * 23?"}]
SECRET = "eu-residency-token-4f1c9e"


def routing_pool(fault_url: str, up_url: str) -> dict[str, Any]:
    up = {"backend": "openai", "base_url": up_url, "model": "plain", "max_retries": 0, "roles": ["worker"]}
    scripted = {"backend": "scripted", "roles": ["worker"]}
    return {
        "name": "routing",
        "models": [
            {"name": "primary", "backend": "openai", "base_url": fault_url, "model": "http:500", "provider": "a"}
            | {"max_retries": 0, "breaker_threshold": 0, "fallbacks": ["b-model", "c-model"], "roles": ["worker"]},
            {"name": "b-model", **up, "provider": "b", "input_usd_per_mtok": 5.0, "output_usd_per_mtok": 20.0},
            {"name": "c-model", **up, "provider": "c", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2}
            | {"headers": {"x-data-residency": "eu", "x-eu-token": "${GW_TEST_RESIDENCY}"}},
            {"name": "local-w", **scripted, "replies": ["391 (local)"], "context_window": 256},
            {"name": "cloud-w", **up, "provider": "b", "context_window": 256},
            {"name": "v", "backend": "scripted", "replies": ["ACCEPT: ok"], "roles": ["verifier", "thinker"]},
        ],
        "defaults": {"worker": "cloud-w", "verifier": "v", "thinker": "v"},
    }


@pytest.fixture
async def gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient, Recorded]]:
    monkeypatch.setenv("GW_TEST_RESIDENCY", SECRET)
    with FaultServer() as faults, recording_upstream() as upstream:
        pool = parse_pool(yaml.safe_dump(routing_pool(faults.url, upstream.url)), "routing")
        tiers = tmp_path / "tiers.yaml"
        tiers.write_text(
            yaml.safe_dump({"tiers": [{"name": "team", "coordinator": "rules", "max_turns": 2, "roles": ["worker"]}]})
        )
        app = create_app(pool, tiers=tiers, traces=Traces(tmp_path / "p.db"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0)
            yield client, http, upstream


async def test_models_array_replaces_the_configured_fallbacks(gateway) -> None:
    client, http, _ = gateway
    r = await client.chat.completions.create(model="primary", messages=ASK, extra_body={"models": ["c-model"]})
    assert r.model == "c-model"
    default = await client.chat.completions.create(model="primary", messages=ASK)
    assert default.model == "b-model"  # the pool's own fallback order
    bad = await http.post("/v1/chat/completions", json={"model": "primary", "messages": ASK, "models": ["nope"]})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "models")


async def test_models_array_cannot_widen_the_policy(gateway) -> None:
    _, http, upstream = gateway
    body = {"model": "primary", "messages": ASK, "models": ["c-model"], "podium": {"exclude_models": ["c-model"]}}
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    assert upstream.bodies == []


@pytest.mark.parametrize(
    "provider, served",
    [
        ({"order": ["c", "b"]}, "c-model"),
        ({"ignore": ["b"]}, "c-model"),
        ({"max_price": {"prompt": 1.0}}, "c-model"),
        ({"only": ["a", "b"]}, "b-model"),
    ],
)
async def test_provider_preferences_shape_the_chain(gateway, provider: dict, served: str) -> None:
    client, _, _ = gateway
    r = await client.chat.completions.create(model="primary", messages=ASK, extra_body={"provider": provider})
    assert r.model == served


async def test_no_fallbacks_when_the_request_says_so(gateway) -> None:
    client, _, upstream = gateway
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(
            model="primary", messages=ASK, extra_body={"provider": {"allow_fallbacks": False}}
        )
    assert upstream.bodies == []


async def test_data_collection_deny_keeps_a_tier_on_private_models(gateway, tmp_path: Path) -> None:
    client, _, upstream = gateway
    raw = await client.chat.completions.with_raw_response.create(
        model="team", messages=ASK, extra_body={"provider": {"data_collection": "deny"}}
    )
    assert raw.parse().choices[0].message.content == "391 (local)"
    run = Store.open(tmp_path / "p.db").run(raw.headers["x-podium-trace-id"])
    assert {t["model"] for t in run["turns"]} <= {"local-w", "v"}
    assert upstream.bodies == []


async def test_model_headers_are_sent_and_never_stored_or_logged(gateway, tmp_path: Path, caplog) -> None:
    client, _, upstream = gateway
    caplog.set_level(logging.DEBUG)
    r = await client.chat.completions.create(model="c-model", messages=ASK)
    assert r.model == "c-model"
    sent = upstream.headers[-1]
    assert sent["x-data-residency"] == "eu" and sent["x-eu-token"] == SECRET
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("p.db*"))
    assert b"x-eu-token" not in stored and SECRET.encode() not in stored
    assert SECRET not in caplog.text


async def test_tier_refuses_a_conversation_no_worker_can_hold(gateway) -> None:
    _, http, _ = gateway
    long = [{"role": "user", "content": "word " * 400}]  # about 500 tokens; the workers hold 256
    narrow = {"allowed_models": ["local-w", "cloud-w"]}
    r = await http.post("/v1/chat/completions", json={"model": "team", "messages": long, "podium": narrow})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.headers["x-should-retry"] == "false"
