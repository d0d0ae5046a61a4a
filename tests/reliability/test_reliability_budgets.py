"""Run budgets under real faults: the deadline cuts a hung call, cost and token budgets refuse
calls that might not fit, and the run keeps its best answer and accounts what it consumed."""

from __future__ import annotations

import yaml

from faults.helpers import MAIN_PRICE, fault_pool, model, run_pool
from faults.server import FaultServer
from podium.backends.base import estimate_prompt_tokens
from podium.pool import parse_pool
from podium.types import Budget, RunStatus


async def test_deadline_cuts_a_hung_call_and_keeps_the_turn(fault_server: FaultServer) -> None:
    pool = fault_pool(fault_server.url, "hang/deadline", timeout_s=30, first_byte_timeout_s=30)
    out = await run_pool(pool, budget=Budget(deadline_s=0.5))
    result = out.result
    assert result.status == RunStatus.BUDGET_EXHAUSTED and result.reason.startswith("deadline_s")
    assert 0.5 <= out.elapsed < 1.2  # the call alone would hang for 30 s
    assert len(result.turns) == 1 and "interrupted: deadline_s" in result.turns[0].error


async def test_deadline_mid_stream_accounts_the_partial_output(fault_server: FaultServer) -> None:
    pool = fault_pool(fault_server.url, "drip/deadline", timeout_s=30)
    out = await run_pool(pool, stream=True, budget=Budget(deadline_s=0.5))
    turn = out.result.turns[0]
    # the drip alone would run for 30 s; the slack is for a loaded machine
    assert out.result.status == RunStatus.BUDGET_EXHAUSTED and out.elapsed < 3.0
    assert turn.output == out.received and out.received.startswith("The answer ...")
    assert turn.usage_estimated and turn.completion_tokens > 0 and turn.cost_usd > 0
    assert out.result.cost_usd == turn.cost_usd


async def test_max_cost_below_one_call_makes_no_call(fault_server: FaultServer) -> None:
    spec = "ok/cost"
    out = await run_pool(fault_pool(fault_server.url, spec), budget=Budget(max_cost_usd=1e-7))
    assert out.result.status == RunStatus.BUDGET_EXHAUSTED
    assert out.result.reason.startswith("max_cost_usd: a call to main may cost")
    assert fault_server.requests_for(spec) == 0 and out.result.turns == []


async def test_max_tokens_budget_refuses_a_prompt_that_cannot_fit(fault_server: FaultServer) -> None:
    out = await run_pool(fault_pool(fault_server.url, "ok/tokens"), budget=Budget(max_tokens=5))
    assert out.result.status == RunStatus.BUDGET_EXHAUSTED and out.result.reason.startswith("max_tokens")
    assert fault_server.requests_for("ok/tokens") == 0


async def test_cost_budget_mid_run_keeps_the_best_answer(fault_server: FaultServer) -> None:
    models = [
        model("plan", fault_server.url, "ok/plan", **MAIN_PRICE),
        model("work", fault_server.url, "ok/work", **MAIN_PRICE),
        model("judge", fault_server.url, "ok/judge", extra_body={"reply": "ACCEPT: fine"}, **MAIN_PRICE),
    ]
    pool = parse_pool(
        yaml.safe_dump(
            {"name": "b", "models": models, "defaults": {"thinker": "plan", "worker": "work", "verifier": "judge"}}
        ),
        "b",
    )
    full = await run_pool(pool, coordinator="rules")
    assert full.result.status == RunStatus.ACCEPTED and len(full.result.turns) == 3
    plan, work = full.result.turns[:2]
    worker_worst = pool.get("work").cost(estimate_prompt_tokens(work.messages), 64)
    budget = plan.cost_usd + worker_worst + 1e-9  # the worker's worst case fits; the verifier's no longer does
    out = await run_pool(pool, coordinator="rules", budget=Budget(max_cost_usd=budget))
    assert out.result.status == RunStatus.BUDGET_EXHAUSTED and "max_cost_usd" in out.result.reason
    assert out.result.answer == "The answer is 42." and len(out.result.turns) == 2
    assert out.result.cost_usd <= budget and fault_server.requests_for("ok/judge") == 1  # only the full run's
