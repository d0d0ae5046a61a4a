"""Reliability as layers of backends: each layer is a Backend, stacks are built once per model,
one logical call shares its context, and the prompted coordinator's own call takes the same path."""

from __future__ import annotations

import asyncio
import random

import pytest

from conftest import POOLS
from podium import Engine, RunStatus, load_pool
from podium.backends import Backend, BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.pool import ModelSpec
from podium.reliability import (
    AllModelsFailed,
    BreakerRegistry,
    CallContext,
    FallbackBackend,
    Layers,
    ModelCall,
    RetryPolicy,
    call_scope,
)
from podium.types import ChatMessage, CompletionRequest

REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="hi")])
FAST = RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.002, rng=random.Random(1))


def scripted(name: str, *replies: str) -> ScriptedBackend:
    return ScriptedBackend(ModelSpec(name=name, backend="scripted", replies=list(replies)))


def layers_over(*backends: ScriptedBackend, retry: RetryPolicy | None = FAST) -> Layers:
    return Layers(BackendSet(overrides={b.spec.name: b for b in backends}), BreakerRegistry(), retry)


async def test_every_layer_is_a_backend_and_the_stack_is_built_once() -> None:
    main = scripted("main", "ok")
    layers = layers_over(main, retry=None)
    stack = layers.get(main.spec)
    assert isinstance(stack, Backend) and stack is layers.get(main.spec)  # cached: one stack per model
    chain = layers.chain([main.spec])
    assert isinstance(chain, Backend) and isinstance(chain, FallbackBackend)
    # the retry policy (and its random generator) belongs to the layer, not to each call
    policy = stack.policy  # type: ignore[attr-defined]
    assert policy.max_retries == main.spec.max_retries
    await stack.complete(REQUEST)
    await stack.complete(REQUEST)
    assert stack.policy is policy and policy.rng is stack.policy.rng  # type: ignore[attr-defined]


async def test_a_call_records_retries_and_every_failed_attempt_then_falls_back() -> None:
    main, backup = scripted("main", "!retryable 503 busy"), scripted("backup", "fine")
    layers = layers_over(main, backup)
    call = ModelCall(layers, [main.spec, backup.spec], REQUEST)
    served = await call.run()
    assert served is not None and served.completion.text == "fine" and served.index == 1
    assert served.spec is backup.spec and call.context.retries == 2
    assert call.context.errors == ["main: 503 busy"] * 3 and len(main.calls) == 3


async def test_a_fallback_chain_used_as_a_plain_backend_raises_when_all_fail() -> None:
    main, backup = scripted("main", "!error bad request"), scripted("backup", "!retryable down")
    chain = layers_over(main, backup).chain([main.spec, backup.spec])
    with call_scope(CallContext()) as call, pytest.raises(AllModelsFailed) as info:
        await chain.complete(REQUEST)
    assert len(main.calls) == 1 and len(backup.calls) == 3  # a 4xx is not retried, a 5xx is
    assert str(info.value).startswith("main: bad request; backup: down") and call.retries == 2


async def test_streaming_through_the_layers_names_the_model_of_each_piece() -> None:
    main, backup = scripted("main", "!error nope"), scripted("backup", "The answer is 42.")
    layers = layers_over(main, backup)
    pieces: list[tuple[str, str]] = []
    served = await ModelCall(layers, [main.spec, backup.spec], REQUEST).run(
        lambda spec, text: pieces.append((spec.name, text))
    )
    assert served is not None and "".join(t for _, t in pieces) == "The answer is 42."
    assert {name for name, _ in pieces} == {"backup"}


async def test_the_prompted_coordinators_call_is_retried_like_a_turn() -> None:
    pool = load_pool(POOLS / "scripted.yaml")
    replies = iter(["!retryable 503 busy", "WORKER", "VERIFIER"])
    checker = ScriptedBackend(
        pool.get("checker"), lambda r: next(replies) if "Which role" in r.messages[-1].content else "ACCEPT"
    )
    engine = Engine(pool, "prompted", backends=BackendSet(overrides={"checker": checker}), retry=FAST)
    result = await engine.run("What is 17 * 23?", budget=None)
    assert result.status == RunStatus.ACCEPTED
    # the 503 was retried inside the coordinator's call: the model chose, no rules fallback
    assert result.turns[0].reason == "coordinator model chose worker"
    assert result.orchestration_prompt_tokens > 0


async def test_a_failing_backend_error_is_not_swallowed_by_the_layers() -> None:
    class Broken(ScriptedBackend):
        async def complete(self, request: CompletionRequest):  # type: ignore[no-untyped-def]
            raise ValueError("a bug, not a provider failure")

    broken = Broken(ModelSpec(name="main", backend="scripted"))
    call = ModelCall(layers_over(broken), [broken.spec], REQUEST)
    with pytest.raises(ValueError):
        await call.run()
    assert call.context.errors == [] and call.context.retries == 0


async def test_a_streams_total_timeout_never_fires_inside_the_callers_own_work() -> None:
    spec = ModelSpec(name="main", backend="scripted", replies=["a long answer in several pieces"], timeout_s=0.2)
    main = ScriptedBackend(spec)
    started: list[str] = []
    finished: list[str] = []

    async def slow_sink(_spec: ModelSpec, text: str) -> None:
        started.append(text)
        await asyncio.sleep(0.15)  # the caller's own work; the upstream's time limit must not cut it
        finished.append(text)

    call = ModelCall(layers_over(main, retry=RetryPolicy(max_retries=0)), [spec], REQUEST)
    assert await call.run(slow_sink) is None
    assert finished and finished == started  # every handed-out piece was fully handled, then the limit raised
    assert call.context.errors == ["main: no complete answer within 0.2s (total timeout)"]
