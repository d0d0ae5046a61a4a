"""Fault matrix: every injected fault, plain and streaming, against a real misbehaving HTTP server.

Per fault it asserts the outcome status, the retries, whether the fallback answered, that the
elapsed time is bounded, and that the trace is complete (attempts, model, tokens, cost).
"""

from __future__ import annotations

import json

import pytest
import yaml

from faults.helpers import FAST_RETRY, fault_pool, model, run_pool
from faults.server import DEFAULT_REPLY, FaultServer, _usage
from podium.backends.base import estimate_prompt_tokens, estimate_tokens
from podium.engine import Engine
from podium.pool import parse_pool
from podium.reliability import CONTINUE_PROMPT, BreakerRegistry, RetryPolicy
from podium.types import Budget, RunStatus

# fault, retries of main, fallback used, (min s, max s), what the failed attempts must mention
MATRIX = [
    ("ok", 0, False, (0.0, 0.9), None),
    ("slow_first_byte:0.1", 0, False, (0.1, 1.0), None),
    ("no_usage", 0, False, (0.0, 0.9), None),
    ("slow_first_byte:3", 1, True, (0.5, 1.6), "timeout"),
    ("hang", 1, True, (0.5, 1.6), "timeout"),
    ("drip", 1, True, (1.6, 3.0), "total timeout"),
    ("http:500", 1, True, (0.0, 1.0), "HTTP 500"),
    ("http:503*1", 1, False, (0.0, 1.0), "HTTP 503"),
    ("http:429:0.3*1", 1, False, (0.3, 1.3), "HTTP 429"),
    ("http:429:30", 0, True, (0.0, 0.9), "HTTP 429"),
    ("http:400", 0, True, (0.0, 0.9), "HTTP 400"),
    ("reset", 1, True, (0.0, 1.0), "cannot reach"),
    ("malformed_json", 1, True, (0.0, 1.0), None),
    ("truncated", 1, True, (0.0, 1.0), None),
    ("wrong_content_type", 1, True, (0.0, 1.0), None),
    ("oversized", 1, True, (0.0, 1.5), "exceeds"),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault,retries,fallback,bounds,mentions", MATRIX, ids=[m[0] for m in MATRIX])
async def test_fault_matrix(
    fault_server: FaultServer,
    fault: str,
    retries: int,
    fallback: bool,
    bounds: tuple[float, float],
    mentions: str | None,
    stream: bool,
) -> None:
    spec = f"{fault}/{stream}"  # unique per case: '*N' faults count requests per spec
    out = await run_pool(fault_pool(fault_server.url, spec), stream=stream)
    result = out.result
    assert result.status == RunStatus.ANSWERED, result.reason
    assert len(result.turns) == 1
    turn = result.turns[0]
    assert turn.error is None
    assert turn.retries == retries
    assert turn.model == ("backup" if fallback else "main")
    assert turn.fallback_from == ("main" if fallback else None)
    failed_attempts = retries + (1 if fallback else 0)
    assert len(turn.attempts) == failed_attempts
    assert all(a.startswith("main: ") for a in turn.attempts)
    if mentions:
        assert all(mentions in a for a in turn.attempts), turn.attempts
    assert fault_server.requests_for(spec) == retries + 1
    assert bounds[0] <= out.elapsed <= bounds[1], out.elapsed
    # the answer is what the caller received, exactly once
    if stream:
        assert out.received == result.answer
    if fault != "drip" or not stream:
        assert result.answer == DEFAULT_REPLY
    # accounting: tokens and cost present, usage flagged estimated only when it was
    assert turn.prompt_tokens > 0 and turn.completion_tokens > 0 and turn.cost_usd > 0
    broken_stream = stream and fault in ("drip", "truncated")  # text arrived before the break
    assert turn.usage_estimated == (fault == "no_usage" or broken_stream)
    dumped = json.loads(json.dumps(result.to_json()))
    assert dumped["status"] == "answered" and dumped["turns"][0]["attempts"] == turn.attempts


@pytest.mark.parametrize("fault", ["reset_mid", "truncated"])
async def test_stream_break_continues_on_fallback_without_duplication(fault_server: FaultServer, fault: str) -> None:
    spec = f"{fault}/splice"
    pool = fault_pool(fault_server.url, spec)
    out = await run_pool(pool, stream=True, retry=RetryPolicy(max_retries=0))
    turn = out.result.turns[0]
    # the caller got "The answer " from main, then only "is 42." from the backup
    assert out.received == DEFAULT_REPLY == out.result.answer
    assert out.deltas[:2] == ["The ", "answer "] and "".join(out.deltas[2:]) == "is 42."
    assert turn.model == "backup" and turn.fallback_from == "main" and turn.usage_estimated
    # usage = estimated partial stream on main + reported continuation on backup, each at its price
    partial_p, partial_c = estimate_prompt_tokens(turn.messages), estimate_tokens("The answer ")
    continuation = [m.model_dump() for m in turn.messages] + [
        {"role": "assistant", "content": "The answer "},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    reported = _usage({"messages": continuation}, "is 42.")
    assert turn.prompt_tokens == partial_p + reported["prompt_tokens"]
    assert turn.completion_tokens == partial_c + reported["completion_tokens"]
    main, backup = pool.get("main"), pool.get("backup")
    expected = main.cost(partial_p, partial_c) + backup.cost(reported["prompt_tokens"], reported["completion_tokens"])
    assert turn.cost_usd == pytest.approx(expected)


async def test_retry_of_same_model_after_stream_break_does_not_repeat(fault_server: FaultServer) -> None:
    out = await run_pool(fault_pool(fault_server.url, "reset_mid*1/retry"), stream=True)
    turn = out.result.turns[0]
    assert turn.model == "main" and turn.retries == 1 and turn.fallback_from is None
    assert out.received == DEFAULT_REPLY == out.result.answer


async def test_every_model_failing_ends_failed_with_reason(fault_server: FaultServer) -> None:
    pool = fault_pool(fault_server.url, "http:500/all", backup="http:503/all")
    out = await run_pool(pool, budget=Budget(max_turns=3))
    result = out.result
    assert result.status == RunStatus.FAILED and result.answer is None
    assert "failed" in result.reason or "max_turns" in result.reason
    assert all(t.error and "HTTP 500" in t.error and "HTTP 503" in t.error for t in result.turns)
    assert out.elapsed < 3.0


async def test_without_configured_fallback_another_allowed_model_is_used(fault_server: FaultServer) -> None:
    config = {
        "name": "nofb",
        "models": [model("main", fault_server.url, "http:500/nofb"), model("other", fault_server.url, "ok")],
        "defaults": {"worker": "main"},
    }
    out = await run_pool(parse_pool(yaml.safe_dump(config), "nofb"))
    turn = out.result.turns[0]
    assert out.result.status == RunStatus.ANSWERED
    assert turn.model == "other" and turn.fallback_from == "main" and turn.retries == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_healthy_calls_reuse_one_connection(stream: bool) -> None:
    with FaultServer() as fresh:
        engine = Engine(
            fault_pool(fresh.url, "ok"), "fixed", retry=RetryPolicy(**FAST_RETRY), breakers=BreakerRegistry()
        )
        try:
            for _ in range(10):
                assert (await engine.run("q", stream=stream)).answer == DEFAULT_REPLY
        finally:
            await engine.aclose()
        assert fresh.accepted == 1  # a stream read to its end returns its connection to the pool
