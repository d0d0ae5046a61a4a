"""langchain-openai's ``ChatOpenAI`` against a live ``podium serve``: invoke, stream,
``with_structured_output`` in its three modes (json_schema, function_calling, json_mode), bound tools
with a tool-message follow-up, on pool models and tiers; and no retry of a failed run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from compat_live import Live, serve
from compat_upstream import REPLY
from pydantic import BaseModel

langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is in the 'test' extra")
openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")

from langchain_core.messages import HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

ASK = "What is the weather in Paris? Answer in JSON."


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from serve(tmp_path_factory)


class Person(BaseModel):
    """A person."""

    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """Weather of a city."""
    return "18C"


def chat(live: Live, model: str, **kwargs: object) -> langchain_openai.ChatOpenAI:
    return langchain_openai.ChatOpenAI(model=model, base_url=live.base, api_key="sk-unused", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_invoke_and_stream(live: Live, model: str) -> None:
    llm = chat(live, model)
    answer = llm.invoke(ASK)
    assert answer.content == REPLY and answer.response_metadata["model_name"] == model
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] > 0
    chunks = list(chat(live, model, stream_usage=True).stream(ASK))
    assert "".join(str(c.content) for c in chunks) == REPLY
    assert sum((c.usage_metadata or {}).get("total_tokens", 0) for c in chunks) > 0


@pytest.mark.parametrize("model", ["gpt-up", "team"])
@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_with_structured_output(live: Live, model: str, method: str) -> None:
    structured = chat(live, model).with_structured_output(Person, method=method)  # type: ignore[arg-type]
    assert structured.invoke(ASK) == Person(name="Ada", age=36)
    sent = live.upstream.last("plain" if model == "gpt-up" else "tier-worker")
    if method == "function_calling":
        assert sent["tools"][0]["function"]["name"] == "Person"
    else:
        assert sent["response_format"]["type"] == ("json_object" if method == "json_mode" else "json_schema")


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_bound_tools_and_tool_message_follow_up(live: Live, model: str) -> None:
    llm = chat(live, model).bind_tools([get_weather])
    history = [HumanMessage("What is the weather in Paris?")]
    called = llm.invoke(history)
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("get_weather", {"city": "Paris"})]
    result = get_weather.invoke(called.tool_calls[0]["args"])
    follow = llm.invoke([*history, called, ToolMessage(result, tool_call_id=called.tool_calls[0]["id"])])
    assert follow.content == "It is 18C there." and not follow.tool_calls


@pytest.mark.parametrize("model", ["gpt-up", "team"])
def test_streamed_tool_calls(live: Live, model: str) -> None:
    chunks = list(chat(live, model).bind_tools([get_weather]).stream("What is the weather in Paris?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_failed_run_is_not_retried(live: Live) -> None:
    runs, calls = len(live.server.runs()), live.upstream.counts["fail"]
    with pytest.raises(openai.InternalServerError):
        chat(live, "down", max_retries=2).invoke(ASK)
    assert len(live.server.runs()) == runs + 1
    assert live.upstream.counts["fail"] - calls == 2  # one run: a call and podium's own single retry
