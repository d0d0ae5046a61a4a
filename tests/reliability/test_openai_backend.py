"""The openai backend with the network faked at the transport (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest

from podium.backends.openai import OpenAIBackend
from podium.errors import BackendError, EndpointUnavailable
from podium.pool import ModelSpec
from podium.types import ChatMessage, CompletionRequest

SPEC = ModelSpec(
    name="m",
    backend="openai",
    base_url="http://test/v1",
    model="prov/m",
    api_key_env="PODIUM_TEST_KEY",
    input_usd_per_mtok=1.0,
    output_usd_per_mtok=3.0,
)
REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=7)


def backend(handler) -> OpenAIBackend:
    return OpenAIBackend(SPEC, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def ok_body(text: str = "hello", usage: bool = True) -> dict:
    body = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if usage:
        body["usage"] = {"prompt_tokens": 10, "completion_tokens": 5}
    return body


async def test_request_shape_usage_and_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TEST_KEY", "sk-secret")
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"], seen["auth"], seen["body"] = (
            str(request.url),
            request.headers.get("authorization"),
            json.loads(request.content),
        )
        return httpx.Response(200, json=ok_body())

    completion = await backend(handler).complete(REQUEST)
    assert seen["url"] == "http://test/v1/chat/completions" and seen["auth"] == "Bearer sk-secret"
    assert seen["body"]["model"] == "prov/m" and seen["body"]["max_tokens"] == 7
    assert completion.text == "hello" and (completion.prompt_tokens, completion.completion_tokens) == (10, 5)
    assert completion.cost_usd == pytest.approx((10 * 1.0 + 5 * 3.0) / 1e6)
    assert not completion.usage_estimated


async def test_missing_usage_is_estimated() -> None:
    completion = await backend(lambda r: httpx.Response(200, json=ok_body("four words of text", usage=False))).complete(
        REQUEST
    )
    assert completion.usage_estimated and completion.completion_tokens > 0 and completion.cost_usd > 0


@pytest.mark.parametrize(
    "status, retryable", [(400, False), (401, False), (404, False), (408, True), (429, True), (500, True), (503, True)]
)
async def test_status_mapping(status: int, retryable: bool) -> None:
    headers = {"retry-after": "2"} if status == 429 else {}
    with pytest.raises(BackendError) as info:
        await backend(lambda r: httpx.Response(status, text="nope", headers=headers)).complete(REQUEST)
    assert info.value.status == status and info.value.retryable is retryable
    assert info.value.retry_after == (2.0 if status == 429 else None)


async def test_malformed_json_and_wrong_content_type() -> None:
    bad = backend(lambda r: httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"}))
    with pytest.raises(BackendError, match="malformed JSON"):
        await bad.complete(REQUEST)
    html = backend(lambda r: httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"}))
    with pytest.raises(BackendError, match="content-type"):
        await html.complete(REQUEST)


async def test_connection_error_is_endpoint_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EndpointUnavailable):
        await backend(handler).complete(REQUEST)


def sse(*events: dict | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


async def test_streaming_sse_with_usage() -> None:
    body = sse(
        {"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        "[DONE]",
    )
    b = backend(lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    items = [d async for d in b.stream(REQUEST)]
    assert [d.text for d in items[:-1]] == ["Hel", "lo"]
    final = items[-1].completion
    assert final is not None and final.text == "Hello" and final.completion_tokens == 2 and not final.usage_estimated


async def test_truncated_stream_is_an_error() -> None:
    body = sse({"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]})
    b = backend(lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    with pytest.raises(BackendError, match="ended before"):
        [d async for d in b.stream(REQUEST)]


async def test_verifier_calls_use_json_schema_only_when_the_model_supports_it() -> None:
    from podium.roles import parse_verdict

    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok_body('{"diagnosis": "17*23 is 391, not 381", "verdict": "REVISE"}'))

    verdict_request = REQUEST.model_copy(update={"structured": "verdict"})
    structured = SPEC.model_copy(update={"structured_output": True})
    completion = await OpenAIBackend(structured, httpx.AsyncClient(transport=httpx.MockTransport(handler))).complete(
        verdict_request
    )
    assert bodies[-1]["response_format"]["json_schema"]["schema"]["properties"]["verdict"]["enum"] == [
        "ACCEPT",
        "REVISE",
    ]
    assert parse_verdict(completion.text) == (parse_verdict("VERDICT: REVISE")[0], "17*23 is 391, not 381")
    await backend(handler).complete(verdict_request)  # the default: no response_format (many servers reject it)
    await OpenAIBackend(structured, httpx.AsyncClient(transport=httpx.MockTransport(handler))).complete(
        REQUEST
    )  # a worker call
    assert "response_format" not in bodies[-2] and "response_format" not in bodies[-1]
