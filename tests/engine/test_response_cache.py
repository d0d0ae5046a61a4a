"""The opt-in exact-match response cache (backends/cached.py): per pool model, per request, TTL, size bound.

The scripted models cycle through their replies, so a second real call answers differently from
the first: an identical reply with ``cached=True`` and zero cost is a cache hit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from podium import Engine, load_pool
from podium.backends import BackendSet
from podium.errors import ConfigError
from podium.pool import Pool
from podium.types import ChatMessage, CompletionRequest

POOL = """
name: cached
models:
  - name: solver
    backend: scripted
    replies: ["one", "two", "three", "four", "five"]
    input_usd_per_mtok: 1.0
    output_usd_per_mtok: 2.0
    cache: {cache}
  - name: plain
    backend: scripted
    replies: ["p1", "p2", "p3"]
defaults:
  worker: solver
"""


def pool_with(tmp_path: Path, cache: str = "true") -> Pool:
    path = tmp_path / "pool.yaml"
    path.write_text(POOL.format(cache=cache))
    return load_pool(path)


def ask(text: str, **params: object) -> CompletionRequest:
    return CompletionRequest(messages=[ChatMessage(role="user", content=text)], **params)  # type: ignore[arg-type]


async def test_a_repeated_call_is_served_from_the_cache_for_free(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path), BackendSet()
    solver = backends.get(pool.get("solver"))
    first = await solver.complete(ask("q"))
    again = await solver.complete(ask("q"))
    assert first.text == "one" and not first.cached and first.cost_usd > 0
    assert again.text == "one" and again.cached
    assert again.cost_usd == 0.0 and again.prompt_tokens == again.completion_tokens == 0


async def test_key_covers_model_messages_and_parameters(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path), BackendSet()
    solver = backends.get(pool.get("solver"))
    texts = [
        (await solver.complete(r)).text
        for r in (ask("q"), ask("other"), ask("q", temperature=0.7), ask("q", max_tokens=7), ask("q", stop=["x"]))
    ]
    assert texts == ["one", "two", "three", "four", "five"]  # every variation was a real call


async def test_models_without_cache_are_untouched_and_requests_choose(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path), BackendSet()
    plain, solver = backends.get(pool.get("plain")), backends.get(pool.get("solver"))
    assert [(await plain.complete(ask("q"))).text for _ in range(2)] == ["p1", "p2"]  # no cache by default
    assert (await plain.complete(ask("q", cache=True))).text == "p3"  # opt in per request: stored
    hit = await plain.complete(ask("q", cache=True))
    assert hit.text == "p3" and hit.cached
    await solver.complete(ask("q"))
    bypass = await solver.complete(ask("q", cache=False))  # opt out per request
    assert bypass.text == "two" and not bypass.cached


async def test_entries_expire_after_ttl(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path, "{ttl_s: 10}"), BackendSet()
    solver = backends.get(pool.get("solver"))
    now = [100.0]
    backends.response_caches["solver"].clock = lambda: now[0]
    await solver.complete(ask("q"))
    now[0] += 9.0
    assert (await solver.complete(ask("q"))).cached
    now[0] += 2.0  # 11 s after it was stored
    late = await solver.complete(ask("q"))
    assert late.text == "two" and not late.cached


async def test_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path, "{max_entries: 2}"), BackendSet()
    solver = backends.get(pool.get("solver"))
    for q in ("a", "b"):
        await solver.complete(ask(q))
    assert (await solver.complete(ask("a"))).cached  # a is now the most recent
    await solver.complete(ask("c"))  # evicts b
    assert len(backends.response_caches["solver"].entries) == 2
    assert (await solver.complete(ask("a"))).cached
    assert not (await solver.complete(ask("b"))).cached


async def test_streams_store_complete_replies_and_replay_them(tmp_path: Path) -> None:
    pool, backends = pool_with(tmp_path), BackendSet()
    solver = backends.get(pool.get("solver"))
    first = [d async for d in solver.stream(ask("q"))]
    second = [d async for d in solver.stream(ask("q"))]
    assert "".join(d.text for d in first) == "".join(d.text for d in second) == "one"
    assert first[-1].completion is not None and not first[-1].completion.cached
    assert second[-1].completion is not None and second[-1].completion.cached


async def test_engine_run_passes_the_request_choice(tmp_path: Path) -> None:
    engine = Engine(pool_with(tmp_path, "false"), "fixed:solver")
    first = await engine.run("What is 2 + 2?", cache=True)
    second = await engine.run("What is 2 + 2?", cache=True)
    third = await engine.run("What is 2 + 2?")  # the pool model has no cache: a real call
    assert first.answer == second.answer == "one" and third.answer == "two"
    assert first.cost_usd > 0 and second.cost_usd == 0.0


def test_cache_config_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        pool_with(tmp_path, "{ttl: 5}")
