"""The official ``openai`` SDK against a live ``podium serve``: chat, streams, structured output,
tools (pass-through and tiers, streamed or not), ``n`` > 1, and no client retry of a failed run."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")

from compat_live import Live, serve  # noqa: E402
from compat_upstream import REPLY  # noqa: E402

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


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve(tmp_path_factory)


class Person(BaseModel):
    name: str
    age: int


def client(live: Live, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base, api_key="sk-unused", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_chat(live: Live, model: str) -> None:
    r = client(live).chat.completions.create(model=model, messages=ASK)
    assert r.choices[0].message.content == REPLY and r.choices[0].finish_reason == "stop"
    assert r.model == model and r.usage is not None and r.usage.total_tokens > 0


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_stream(live: Live, model: str) -> None:
    chunks = list(
        client(live).chat.completions.create(
            model=model, messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert {c.model for c in chunks} == {model}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_stream_chunks_carry_the_served_model(live: Live) -> None:
    """``flaky`` fails over to ``gpt-up``: the chunks say who answered, as the plain response does."""
    plain = client(live).chat.completions.create(model="flaky", messages=ASK)
    assert plain.model == "gpt-up"
    chunks = list(client(live).chat.completions.create(model="flaky", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert {c.model for c in chunks} == {"gpt-up"}


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_structured_output_parse(live: Live, model: str) -> None:
    r = client(live).chat.completions.parse(model=model, messages=ASK, response_format=Person)
    assert r.choices[0].message.parsed == Person(name="Ada", age=36)
    sent = live.upstream.last("plain" if model == "gpt-up" else "tier-worker")
    assert sent["response_format"]["json_schema"]["name"] == "Person"


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_tools_and_tool_result_follow_up(live: Live, model: str) -> None:
    c = client(live)
    r = c.chat.completions.create(model=model, messages=ASK, tools=TOOLS)
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and message.tool_calls
    call = message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow = [*ASK, message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
    r2 = c.chat.completions.create(model=model, messages=follow, tools=TOOLS)
    assert r2.choices[0].finish_reason == "stop" and "18C" in (r2.choices[0].message.content or "")


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_tools_streamed(live: Live, model: str) -> None:
    chunks = list(client(live).chat.completions.create(model=model, messages=ASK, tools=TOOLS, stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_n_runs_in_parallel(live: Live, model: str) -> None:
    before = len(live.server.runs())
    r = client(live).chat.completions.create(model=model, messages=ASK, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == REPLY for c in r.choices)
    assert len(live.server.runs()) == before + 3
    line = live.logged(r.model_extra["podium"]["trace_id"])
    one = client(live).chat.completions.create(model=model, messages=ASK)
    assert r.usage is not None and one.usage is not None and r.usage.total_tokens == 3 * one.usage.total_tokens
    assert r.usage.cost == pytest.approx(3 * one.usage.cost)  # type: ignore[attr-defined]
    assert line["cost_usd"] == pytest.approx(r.usage.cost) and len(line["trace_ids"]) == 3  # type: ignore[attr-defined]


def test_response_cache_tells_tool_calls_from_plain_answers(live: Live) -> None:
    """A cached model answers the same messages with tools by calling them, not with the cached text."""
    c = client(live)
    plain = c.chat.completions.create(model="cached-up", messages=ASK)
    assert plain.choices[0].message.content == REPLY
    tools = c.chat.completions.create(model="cached-up", messages=ASK, tools=TOOLS)
    assert tools.choices[0].finish_reason == "tool_calls"
    again = c.chat.completions.create(model="cached-up", messages=ASK)
    assert again.choices[0].message.content == REPLY


def test_failed_run_is_not_retried_by_the_sdk(live: Live) -> None:
    c = client(live)
    assert c.max_retries == 2
    runs, calls = len(live.server.runs()), live.upstream.counts["fail"]
    with pytest.raises(openai.InternalServerError) as caught:
        c.chat.completions.create(model="down", messages=ASK)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(live.server.runs()) == runs + 1
    assert live.upstream.counts["fail"] - calls == 2  # one run: a call and podium's own single retry
