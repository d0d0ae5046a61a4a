"""Deployments behind one model name at the server, with the real openai SDK and real upstreams on
127.0.0.1: the key's region policy picks the deployment, all deployments over their rpm is a 429 with
``Retry-After``, and a tier's worker runs on the deployments too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from podium.pool import parse_pool  # noqa: E402
from podium.server.app import create_app  # noqa: E402
from podium.server.auth import hash_key  # noqa: E402
from podium.server.traces import Traces  # noqa: E402
from recording_upstream import REPLY, Recorded, recording_upstream  # noqa: E402

ASK = [{"role": "user", "content": "What is 17 * 23?"}]


def gateway_pool(eu: str, us: str) -> dict[str, Any]:
    deployments = [
        {"name": "us-east", "base_url": us, "model": "plain", "region": "us", "rpm": 2},
        {"name": "eu-west", "base_url": eu, "model": "plain", "region": "eu", "rpm": 2},
    ]
    gpt = {"name": "gpt", "backend": "openai", "max_retries": 0, "routing": "least-busy", "deployments": deployments}
    verifier = {"name": "v", "backend": "scripted", "replies": ["ACCEPT: ok"], "roles": ["verifier", "thinker"]}
    return {"name": "gw", "models": [gpt, verifier], "defaults": {"worker": "gpt", "verifier": "v"}}


def sdk(app: Any, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key=key, http_client=http, max_retries=0)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Any, Recorded, Recorded]]:
    with recording_upstream() as eu, recording_upstream() as us:
        pool = parse_pool(yaml.safe_dump(gateway_pool(eu.url, us.url)), "gw")
        keys = tmp_path / "keys.yaml"
        entries = [
            {"name": "eu-only", "sha256": hash_key("sk-eu"), "policy": {"allowed_regions": ["eu"]}},
            {"name": "any", "sha256": hash_key("sk-any")},
        ]
        keys.write_text(yaml.safe_dump({"keys": entries}))
        tiers = tmp_path / "tiers.yaml"
        tiers.write_text(yaml.safe_dump({"tiers": [{"name": "team", "coordinator": "fixed:gpt", "max_turns": 1}]}))
        yield create_app(pool, keys=keys, tiers=tiers, traces=Traces(tmp_path / "p.db")), eu, us


async def test_key_region_policy_picks_the_deployment_and_rpm_gives_429(gateway) -> None:
    app, eu, us = gateway
    client = sdk(app, "sk-eu")
    for _ in range(2):
        r = await client.chat.completions.create(model="gpt", messages=ASK)
        assert r.choices[0].message.content == REPLY and r.model == "gpt"
    assert (len(eu.bodies), len(us.bodies)) == (2, 0)  # the key's policy excludes the us deployment
    with pytest.raises(openai.RateLimitError) as caught:  # eu-west is at its rpm: the only one this key may use
        await client.chat.completions.create(model="gpt", messages=ASK)
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60
    assert len(eu.bodies) == 2
    other = sdk(app, "sk-any")  # a key that may use us-east still gets an answer there
    stream = await other.chat.completions.create(model="gpt", messages=ASK, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == REPLY and (len(eu.bodies), len(us.bodies)) == (2, 1)


async def test_tier_worker_uses_the_deployments(gateway) -> None:
    app, eu, us = gateway
    client = sdk(app, "sk-any")
    for _ in range(4):
        r = await client.chat.completions.create(model="team", messages=ASK)
        assert REPLY in (r.choices[0].message.content or "")
    assert (len(eu.bodies), len(us.bodies)) == (2, 2)  # least-busy: evenly, within each rpm
    with pytest.raises(openai.APIStatusError):  # both at their rpm and no fallback: the run fails
        await client.chat.completions.create(model="team", messages=ASK)
    assert (len(eu.bodies), len(us.bodies)) == (2, 2)


async def test_the_answering_deployment_is_a_header_and_in_the_trace(gateway) -> None:
    app, eu, us = gateway
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    auth = {"Authorization": "Bearer sk-eu"}
    r = await http.post("/v1/chat/completions", json={"model": "gpt", "messages": ASK}, headers=auth)
    assert r.status_code == 200 and r.headers["x-podium-deployment"] == "eu-west"
    assert "127.0.0.1" not in r.headers["x-podium-deployment"]  # the name only, never the base_url
    trace = (await http.get(f"/v1/traces/{r.headers['x-podium-trace-id']}", headers=auth)).json()
    assert trace["turns"][0]["model"] == "gpt" and trace["turns"][0]["deployment"] == "eu-west"
    body = {"model": "gpt", "messages": ASK, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as streamed:
        assert streamed.status_code == 200
        run_id = streamed.headers["x-podium-trace-id"]
        _ = [line async for line in streamed.aiter_lines()]
    trace = (await http.get(f"/v1/traces/{run_id}", headers=auth)).json()
    assert trace["turns"][0]["deployment"] == "eu-west"  # a stream's trace says it too
