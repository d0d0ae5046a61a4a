"""The OpenAI request surface with the real openai SDK: ordinary fields accepted, tools and
response_format forwarded to a pass-through model (a recording upstream on 127.0.0.1), tool-role
messages and image parts forwarded as sent, clear 400s for what a tier cannot honour, and
``GET /v1/models/{id}`` with price and context window."""

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
from podium.server.traces import Traces  # noqa: E402
from recording_upstream import REPLY, Recorded, recording_upstream  # noqa: E402

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}},
    },
}


def gateway_pool(url: str) -> dict[str, Any]:
    scripted = {"backend": "scripted", "region": "eu", "provider": "local-test"}
    return {
        "name": "gateway",
        "models": [
            {"name": "gpt-up", "backend": "openai", "base_url": url, "model": "plain", "region": "eu"}
            | {"provider": "up-cloud", "input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10.0}
            | {"context_window": 128000, "max_retries": 0},
            {"name": "w", "replies": ["The answer."], **scripted, "roles": ["worker", "thinker", "coordinator"]},
            {"name": "v", "replies": ["ACCEPT: fine."], **scripted, "roles": ["verifier"]},
        ],
        "defaults": {"worker": "w", "thinker": "w", "verifier": "v", "coordinator": "w"},
    }


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient, Recorded]]:
    with recording_upstream() as upstream:
        pool = parse_pool(yaml.safe_dump(gateway_pool(upstream.url)), "gateway")
        tiers = tmp_path / "tiers.yaml"
        tiers.write_text(yaml.safe_dump({"tiers": [{"name": "team", "coordinator": "rules", "max_turns": 3}]}))
        app = create_app(pool, tiers=tiers, traces=Traces(tmp_path / "p.db"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http), http, upstream


async def test_ordinary_fields_are_accepted_and_named_as_ignored(gateway) -> None:
    client, _, upstream = gateway
    extra = dict(metadata={"team": "a"}, store=False, service_tier="auto", logprobs=False, seed=1, user="u1")
    for model in ("gpt-up", "team"):
        r = await client.chat.completions.create(
            model=model, messages=ASK, n=1, modalities=["text"], parallel_tool_calls=False, **extra
        )
        assert r.choices[0].message.content
        assert set(r.model_extra["podium"]["ignored"]) == {
            "metadata",
            "store",
            "service_tier",
            "logprobs",
            "seed",
            "user",
        }
    assert "metadata" not in upstream.bodies[0] and upstream.bodies[0]["parallel_tool_calls"] is False


async def test_tools_are_forwarded_and_tool_calls_come_back(gateway) -> None:
    client, _, upstream = gateway
    r = await client.chat.completions.create(model="gpt-up", messages=ASK, tools=TOOLS, tool_choice="auto")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert upstream.bodies[-1]["tools"] == TOOLS and upstream.bodies[-1]["tool_choice"] == "auto"
    # the client runs the tool and sends the result back as a tool-role message: forwarded as sent
    follow = [
        *ASK,
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    r2 = await client.chat.completions.create(model="gpt-up", messages=follow)
    assert r2.choices[0].message.content == REPLY
    sent = upstream.bodies[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}


async def test_response_format_is_forwarded_to_a_passthrough_and_instructed_on_a_tier(gateway, tmp_path) -> None:
    client, _, upstream = gateway
    r = await client.chat.completions.create(model="gpt-up", messages=ASK, response_format=SCHEMA)
    assert r.choices[0].message.content == '{"name": "Ada", "age": 36}'
    assert upstream.bodies[-1]["response_format"] == SCHEMA
    tier = await client.chat.completions.with_raw_response.create(model="team", messages=ASK, response_format=SCHEMA)
    trace_id = tier.headers["x-podium-trace-id"]
    from podium.traces.store import Store

    run = Store.open(tmp_path / "p.db").run(trace_id)
    assert "validates against this JSON schema" in run["query"] and '"age"' in run["query"]


async def test_image_parts_are_forwarded_to_a_passthrough(gateway) -> None:
    client, _, upstream = gateway
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
    ]
    r = await client.chat.completions.create(model="gpt-up", messages=[{"role": "user", "content": parts}])
    assert r.choices[0].message.content == REPLY
    assert upstream.bodies[-1]["messages"][0]["content"] == parts


@pytest.mark.parametrize(
    "model, extra, param, code",
    [
        ("gpt-up", {"n": 2, "stream": True}, "n", "unsupported_value"),
        ("team", {"n": 9}, "n", "unsupported_value"),
        ("gpt-up", {"modalities": ["text", "audio"]}, "modalities", "invalid_value"),
        (
            "team",
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
                ]
            },
            "messages",
            "unsupported_on_tier",
        ),
        ("gpt-up", {"response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
    ],
)
async def test_what_cannot_be_honoured_is_a_clear_400(gateway, model, extra, param, code) -> None:
    _, http, upstream = gateway
    body = {"model": model, "messages": ASK, **extra}
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert upstream.bodies == []


async def test_get_model_has_price_and_context_window(gateway) -> None:
    client, http, _ = gateway
    card = await client.models.retrieve("gpt-up")
    assert card.id == "gpt-up" and card.owned_by == "up-cloud"
    assert card.model_extra["context_length"] == 128000
    assert card.model_extra["pricing"] == {"prompt": "2.5e-06", "completion": "1e-05"}
    assert card.model_extra["podium"]["region"] == "eu"
    tier = await client.models.retrieve("team")
    assert tier.model_extra["podium"]["kind"] == "tier"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")
    listed = (await http.get("/v1/models")).json()["data"]
    assert next(c for c in listed if c["id"] == "gpt-up")["context_length"] == 128000
