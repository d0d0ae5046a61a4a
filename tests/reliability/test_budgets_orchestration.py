"""Budgets count every token and dollar a run spends, the coordinator's included, checked before each
call (CLI, engine and server tiers); prompts that cannot fit a model's context window are refused or
that model skipped. Against the real fault server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from faults.helpers import model
from faults.server import FaultServer
from podium.engine import Engine
from podium.pool import parse_pool
from podium.reliability import BreakerRegistry
from podium.types import Budget, RunStatus

PRICE = dict(input_usd_per_mtok=50.0, output_usd_per_mtok=50.0)  # a 10k-token prompt costs $0.50
QUESTION = "Summarise this. " + "lorem ipsum dolor sit amet " * 1480  # about 40,000 characters


def pool_config(url: str, price: dict, **extra: object) -> dict:
    big = dict(context_window=32768, max_tokens=64, **price, **extra)
    models = [
        model("coord", url, "ok", roles=["coordinator"], extra_body={"reply": "WORKER"}, **big),
        model("work", url, "ok", roles=["worker", "thinker"], **big),
        model("judge", url, "ok", roles=["verifier"], extra_body={"reply": "REVISE: again"}, **big),
    ]
    return {
        "name": "orch",
        "models": models,
        "defaults": {"coordinator": "coord", "worker": "work", "thinker": "work", "verifier": "judge"},
    }


def spent(result_json: dict) -> float:
    return result_json["cost_usd"] + result_json["orchestration_cost_usd"]


def test_cli_max_cost_holds_with_the_prompted_coordinator(fault_server: FaultServer, tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(pool_config(fault_server.url, PRICE)))
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "podium",
            "ask",
            "--pool",
            str(pool),
            "--coordinator",
            "prompted",
            "--max-cost",
            "0.001",
            "--max-turns",
            "4",
            "--json",
            QUESTION,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    out = json.loads(proc.stdout)
    assert spent(out) <= 0.001, out
    assert out["status"] == "budget_exhausted" and "max_cost_usd" in out["reason"]


@pytest.mark.parametrize("limit", [{"max_cost_usd": 0.001}, {"max_tokens": 900}])
async def test_engine_budget_counts_the_coordinator(fault_server: FaultServer, limit: dict) -> None:
    cheap = dict(input_usd_per_mtok=1.0, output_usd_per_mtok=1.0)  # a ~60-token call costs ~$0.00006: several fit
    engine = Engine(
        parse_pool(yaml.safe_dump(pool_config(fault_server.url, cheap)), "orch"), "prompted", breakers=BreakerRegistry()
    )
    try:
        result = await engine.run("What is six times seven? " * 8, budget=Budget(max_turns=30, **limit))
    finally:
        await engine.aclose()
    assert result.status == RunStatus.BUDGET_EXHAUSTED, (result.status, result.reason)
    assert result.orchestration_prompt_tokens > 0 and len(result.turns) >= 2  # the budget let a few calls through
    if "max_cost_usd" in limit:
        assert result.cost_usd + result.orchestration_cost_usd <= limit["max_cost_usd"]
    else:
        used = result.total_tokens + result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        assert used <= limit["max_tokens"]


async def test_server_tier_respects_the_pool_cost_cap_with_coordinator_spend(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")
    from podium.server.app import create_app
    from podium.server.traces import Traces

    config = {**pool_config(fault_server.url, PRICE), "budget": {"max_turns": 5, "max_cost_usd": 0.002}}
    app = create_app(parse_pool(yaml.safe_dump(config), "orch"), traces=Traces(tmp_path / "podium.db"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60
    ) as client:
        r = await client.post(
            "/v1/chat/completions", json={"model": "podium", "messages": [{"role": "user", "content": QUESTION}]}
        )
        # no worker call can fit $0.002 (the question alone costs ~$0.5; a worker's 64-token answer
        # $0.0032): the server refuses before the coordinator spends anything
        assert r.status_code == 400 and r.json()["error"]["code"] == "budget_exceeded", r.text
        runs = (await client.get("/ui/api/runs")).json()
    assert not (runs["runs"] if isinstance(runs, dict) else runs)  # nothing ran, nothing was spent


async def test_prompt_too_long_for_a_model_skips_it_for_a_fallback(fault_server: FaultServer) -> None:
    small = model("small", fault_server.url, "ok", context_window=256, fallbacks=["large"])
    large = model("large", fault_server.url, "ok", context_window=32768)
    pool = parse_pool(yaml.safe_dump({"name": "ctx", "models": [small, large], "defaults": {"worker": "small"}}), "ctx")
    engine = Engine(pool, "fixed", breakers=BreakerRegistry())
    try:
        result = await engine.run(QUESTION, budget=Budget(max_turns=1))
        alone = await Engine(
            parse_pool(
                yaml.safe_dump(
                    {"name": "ctx1", "models": [small | {"fallbacks": []}], "defaults": {"worker": "small"}}
                ),
                "c",
            ),
            "fixed",
            breakers=BreakerRegistry(),
        ).run(QUESTION, budget=Budget(max_turns=1))
    finally:
        await engine.aclose()
    assert result.answer and result.turns[0].model == "large" and result.turns[0].fallback_from == "small"
    assert "does not fit the context window of small" in result.turns[0].attempts[0]
    assert fault_server.requests_for("ok") >= 1
    assert alone.status == RunStatus.FAILED and "context window" in alone.turns[0].error


async def test_passthrough_prompt_too_long_is_400(fault_server: FaultServer, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")
    from podium.server.app import create_app
    from podium.server.traces import Traces

    config = {"name": "ctx", "models": [model("small", fault_server.url, "ok", context_window=256)], "defaults": {}}
    app = create_app(parse_pool(yaml.safe_dump(config), "ctx"), traces=Traces(tmp_path / "podium.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        r = await client.post(
            "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": QUESTION}]}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
