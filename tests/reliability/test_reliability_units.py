"""Small pieces of the reliability layer: retry delays, Retry-After dates, the stream splice."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import formatdate

import httpx
import pytest

from podium.backends.openai import OpenAIBackend
from podium.errors import BackendError
from podium.pool import ModelSpec
from podium.reliability import CallReport, RetryPolicy, StreamSplice, with_retries
from podium.types import ChatMessage, Completion, CompletionRequest

REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="hi")])


def test_backoff_grows_with_jitter_and_retry_after_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=0.3, jitter=0.5, rng=random.Random(0))
    plain = BackendError("503", status=503, retryable=True)
    delays = [policy.delay(n, plain) for n in (1, 2, 3, 4)]
    assert 0.05 <= delays[0] <= 0.1 and 0.1 <= delays[1] <= 0.2 and 0.15 <= delays[3] <= 0.3
    assert policy.delay(1, BackendError("429", status=429, retryable=True, retry_after=2.5)) == 2.5
    assert policy.delay(1, BackendError("429", status=429, retryable=True, retry_after=60)) is None


async def test_retries_stop_at_client_errors_and_before_the_deadline() -> None:
    calls = 0

    async def fail(error: BackendError):
        nonlocal calls
        calls += 1
        raise error

    report = CallReport()
    with pytest.raises(BackendError):
        await with_retries(lambda: fail(BackendError("400", status=400)), RetryPolicy(max_retries=3), report)
    assert calls == 1 and report.retries == 0
    calls, report = 0, CallReport()
    deadline = asyncio.get_running_loop().time() + 0.3
    started = time.perf_counter()
    with pytest.raises(BackendError):
        await with_retries(
            lambda: fail(BackendError("503", retryable=True, retry_after=0.2)),
            RetryPolicy(max_retries=5),
            report,
            deadline,
        )
    assert calls == 2 and report.retries == 1 and time.perf_counter() - started < 0.3


async def test_retry_after_http_date_is_parsed() -> None:
    when = formatdate(time.time() + 3, usegmt=True)
    transport = httpx.MockTransport(
        lambda r: httpx.Response(429, headers={"Retry-After": when}, json={"error": "slow down"})
    )
    spec = ModelSpec(name="m", backend="openai", base_url="http://127.0.0.1:1/v1")
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(BackendError) as info:
            await OpenAIBackend(spec, client).complete(REQUEST)
    assert info.value.status == 429 and info.value.retryable and 1.5 < info.value.retry_after <= 3


def test_splice_holds_back_a_word_for_word_restart() -> None:
    splice = StreamSplice()
    splice.request_for(REQUEST)
    assert splice.feed("The ") == "The " and splice.feed("answer ") == "answer "
    spec = ModelSpec(name="m", backend="scripted", input_usd_per_mtok=1, output_usd_per_mtok=1)
    splice.failed(spec, REQUEST)
    retry = splice.request_for(REQUEST)
    assert retry.messages[-2].content == "The answer " and retry.messages[-1].role == "user"
    # the next model ignores the instruction and starts over: the repeated prefix is not re-emitted
    assert [splice.feed(p) for p in ("The ", "answer ", "is ", "42.")] == ["", "", "is ", "42."]
    final = splice.finish(Completion(text="The answer is 42.", model="m", prompt_tokens=10, completion_tokens=5))
    assert final.text == "The answer is 42." and final.usage_estimated
    assert final.prompt_tokens > 10 and final.completion_tokens == 5 + 3 and final.cost_usd > 0


def test_splice_emits_a_genuine_continuation_whole() -> None:
    splice = StreamSplice()
    splice.request_for(REQUEST)
    splice.feed("The answer ")
    splice.request_for(REQUEST)
    assert splice.feed("is") == "is" and splice.feed(" 42.") == " 42."
    assert splice.sent == "The answer is 42."
