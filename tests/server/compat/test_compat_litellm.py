"""LiteLLM's SDK (``litellm.completion`` / ``acompletion``) against a live ``podium serve``, as an
``openai/`` model with ``api_base`` and as an ``openrouter/`` one: chat, streams, structured output,
tools, the cost LiteLLM reads, and no retry of a failed run.

LiteLLM takes a response's cost from the ``x-litellm-response-cost`` header (any provider) or, for
``openrouter/`` models, from OpenRouter's ``usage.cost``; without either it looks the model up in its
price map, where a podium model is not (``response_cost`` stays None).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from compat_live import Live, serve  # (sets LITELLM_LOCAL_MODEL_COST_MAP before the import below)
from compat_upstream import PROVIDER_COST, REPLY
from pydantic import BaseModel

litellm = pytest.importorskip("litellm", reason="litellm is in the 'test' extra")

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
POOL_COST = round((11 * 2.5 + 7 * 10.0) / 1e6, 8)  # gpt-up's 11 + 7 tokens at the pool's prices


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve(tmp_path_factory)


class Person(BaseModel):
    name: str
    age: int


def call(live: Live, model: str, provider: str = "openai", **kwargs: object) -> object:
    return litellm.completion(model=f"{provider}/{model}", api_base=live.base, api_key="sk-unused", **kwargs)


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_chat(live: Live, model: str) -> None:
    r = call(live, model, messages=ASK)
    assert r.choices[0].message.content == REPLY and r.model == model


async def test_acompletion(live: Live) -> None:
    r = await litellm.acompletion(model="openai/team", api_base=live.base, api_key="sk-unused", messages=ASK)
    assert r.choices[0].message.content == REPLY


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_stream(live: Live, model: str) -> None:
    """(LiteLLM's stream chunks carry the requested model, whatever the server's say.)"""
    chunks = list(call(live, model, messages=ASK, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    built = litellm.stream_chunk_builder(chunks, messages=ASK)
    assert built.usage.total_tokens > 0 and built.choices[0].message.content == REPLY


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_structured_output(live: Live, model: str) -> None:
    r = call(live, model, messages=ASK, response_format=Person)
    assert Person.model_validate_json(r.choices[0].message.content) == Person(name="Ada", age=36)
    sent = live.upstream.last("plain" if model == "gpt-up" else "tier-worker")
    assert sent["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_tools_and_tool_result_follow_up(live: Live, model: str) -> None:
    r = call(live, model, messages=ASK, tools=TOOLS)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    tool_call = message.tool_calls[0]
    assert tool_call.function.name == "get_weather" and json.loads(tool_call.function.arguments) == {"city": "Paris"}
    follow = [*ASK, message.model_dump(), {"role": "tool", "tool_call_id": tool_call.id, "content": "18C"}]
    r2 = call(live, model, messages=follow, tools=TOOLS)
    assert r2.choices[0].message.content == "It is 18C there."


def test_cost_read_by_litellm(live: Live) -> None:
    """The response cost LiteLLM reports (``_hidden_params['response_cost']``, what its callbacks and
    proxy spend tracking use) is podium's: the pool's prices, or the upstream's own reported cost."""
    for provider in ("openai", "openrouter"):
        r = call(live, "gpt-up", provider, messages=ASK)
        assert r._hidden_params["response_cost"] == pytest.approx(POOL_COST), provider
        assert r.usage.cost == pytest.approx(POOL_COST)
        priced = call(live, "priced-up", provider, messages=ASK)
        assert priced._hidden_params["response_cost"] == pytest.approx(PROVIDER_COST), provider
    # openrouter/ streams ask for usage the OpenRouter way (usage: {include: true}): the cost comes last
    chunks = list(call(live, "priced-up", "openrouter", messages=ASK, stream=True))
    built = litellm.stream_chunk_builder(chunks, messages=ASK)
    assert built.usage.cost == pytest.approx(PROVIDER_COST)
    assert built._hidden_params["response_cost"] == pytest.approx(PROVIDER_COST)


def test_tier_cost_counts_the_whole_run(live: Live) -> None:
    r = call(live, "team", messages=ASK)
    assert r._hidden_params["response_cost"] == pytest.approx(r.usage.cost) and r.usage.cost > 0
    assert r.usage.cost == pytest.approx(r.usage.cost_usd + r.usage.orchestration_cost_usd)


async def test_failed_run_is_not_retried(live: Live) -> None:
    """LiteLLM's OpenAI client with retries on: one failed run per call, counted on the server."""
    for complete in (litellm.completion, litellm.acompletion):
        runs, calls = len(live.server.runs()), live.upstream.counts["fail"]
        with pytest.raises(litellm.BadGatewayError) as caught:
            out = complete(model="openai/down", api_base=live.base, api_key="sk-unused", messages=ASK, max_retries=2)
            if complete is litellm.acompletion:
                await out
        assert caught.value.status_code == 502
        assert len(live.server.runs()) == runs + 1
        assert live.upstream.counts["fail"] - calls == 2  # one run: a call and podium's own single retry


def test_litellm_num_retries_does_not_read_the_header(live: Live) -> None:
    """LiteLLM's own retry layer (``num_retries``, off by default) retries a 502 whatever
    ``x-should-retry`` says: documented in docs/gateway.md, pinned here so the doc stays true."""
    runs = len(live.server.runs())
    with pytest.raises(litellm.BadGatewayError):
        call(live, "down", messages=ASK, num_retries=2)
    assert len(live.server.runs()) == runs + 3
