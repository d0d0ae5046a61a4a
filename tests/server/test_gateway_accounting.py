"""Cost and identity other tools read, with the real openai SDK: ``usage.cost`` (OpenRouter's field),
the provider-reported cost over the price table, the fallback that answered in ``model`` and in
headers, and streamed usage that says whether its tokens were counted or estimated."""

from __future__ import annotations

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
from recording_upstream import PROVIDER_COST, REPLY, recording_upstream  # noqa: E402

ASK = [{"role": "user", "content": "What is 17 * 23?"}]


def accounting_pool(fault_url: str, up_url: str) -> dict[str, Any]:
    price = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0, "max_retries": 0}
    scripted = {"backend": "scripted", **price}
    return {
        "name": "accounting",
        "models": [
            {"name": "primary", "backend": "openai", "base_url": fault_url, "model": "http:500", **price}
            | {"fallbacks": ["backup"], "breaker_threshold": 0, "roles": ["worker"]},
            {
                "name": "backup",
                "backend": "openai",
                "base_url": up_url,
                "model": "priced",
                **price,
                "roles": ["worker"],
            },
            {"name": "listed", "backend": "openai", "base_url": up_url, "model": "plain", **price, "roles": ["worker"]},
            {"name": "bare", "backend": "openai", "base_url": fault_url, "model": "no_usage", **price},
            {"name": "w", "replies": ["391"], **scripted, "roles": ["worker", "thinker", "coordinator"]},
            {"name": "v", "replies": ["ACCEPT: ok"], **scripted, "roles": ["verifier"]},
        ],
        "defaults": {"worker": "w", "thinker": "w", "verifier": "v", "coordinator": "w"},
    }


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    with FaultServer() as faults, recording_upstream() as upstream:
        pool = parse_pool(yaml.safe_dump(accounting_pool(faults.url, upstream.url)), "accounting")
        tiers = tmp_path / "tiers.yaml"
        tiers.write_text(yaml.safe_dump({"tiers": [{"name": "team", "coordinator": "prompted", "max_turns": 3}]}))
        app = create_app(pool, tiers=tiers, traces=Traces(tmp_path / "p.db"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
            yield openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0)


async def test_fallback_answer_names_the_served_model_and_its_provider_cost(client) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="primary", messages=ASK)
    r = raw.parse()
    assert r.choices[0].message.content == REPLY
    assert r.model == "backup"  # the model that answered, not the one asked for
    assert raw.headers["x-podium-fallback"] == "primary->backup"
    assert raw.headers["x-podium-served-model"] == "backup"
    # the provider reported usage.cost: it wins over the price table (11 and 7 tokens at $1/$2 per Mtok)
    assert r.usage.model_extra["cost"] == PROVIDER_COST == r.usage.model_extra["cost_usd"]
    assert float(raw.headers["x-podium-cost-usd"]) == pytest.approx(PROVIDER_COST)
    assert r.usage.model_extra["estimated"] is False


async def test_price_table_cost_without_a_provider_cost(client) -> None:
    r = await client.chat.completions.create(model="listed", messages=ASK)
    assert r.model == "listed"
    assert r.usage.model_extra["cost"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


async def test_tier_cost_includes_the_coordinator(client) -> None:
    raw = await client.chat.completions.with_raw_response.create(model="team", messages=ASK)
    r = raw.parse()
    extra = r.usage.model_extra
    assert extra["orchestration_cost_usd"] > 0 and extra["cost_usd"] > 0
    assert extra["cost"] == pytest.approx(extra["cost_usd"] + extra["orchestration_cost_usd"])
    assert r.model == "team" and raw.headers["x-podium-served-model"] == "w"


@pytest.mark.parametrize("model, estimated", [("listed", False), ("bare", True)])
async def test_streamed_usage_says_whether_it_is_estimated(client, model: str, estimated: bool) -> None:
    """``listed`` reports usage in its stream; ``bare`` does not, so its tokens are guessed."""
    stream = await client.chat.completions.create(
        model=model, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    usage = [c.usage async for c in stream if c.usage is not None][-1]
    assert usage.model_extra["estimated"] is estimated
    assert usage.model_extra["cost"] is not None
