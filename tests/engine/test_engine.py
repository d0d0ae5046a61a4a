"""The turn loop and the coordinators, on the scripted backend (no network, deterministic)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import POOLS
from podium import Budget, Engine, Policy, Role, RunStatus, Verdict, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.errors import PolicyError, UsageError
from podium.types import CompletionRequest

SCRIPTED = POOLS / "scripted.yaml"


def engine_with(coordinator: str = "rules", **functions) -> Engine:
    """An engine on the scripted pool whose models reply with the given functions."""
    pool = load_pool(SCRIPTED)
    overrides = {name: ScriptedBackend(pool.get(name), fn) for name, fn in functions.items()}
    return Engine(pool, coordinator, backends=BackendSet(overrides=overrides))


async def test_rules_thinker_worker_verifier_accept() -> None:
    result = await Engine(load_pool(SCRIPTED), "rules").run("What is 17 * 23?")
    assert result.status == RunStatus.ACCEPTED
    assert result.answer == "391"
    assert [t.role for t in result.turns] == [Role.THINKER, Role.WORKER, Role.VERIFIER]
    assert [t.model for t in result.turns] == ["planner", "solver", "checker"]
    assert result.turns[2].verdict == Verdict.ACCEPT
    # cost comes from the pool's prices: planner 1$/2$ per Mtok, checker free
    t1 = result.turns[0]
    assert t1.cost_usd == pytest.approx((t1.prompt_tokens * 1.0 + t1.completion_tokens * 2.0) / 1e6)
    assert result.turns[2].cost_usd == 0.0
    assert result.cost_usd == pytest.approx(sum(t.cost_usd for t in result.turns))


async def test_revise_sends_back_to_worker_with_feedback() -> None:
    verdicts = iter(["REVISE: the product is wrong", "ACCEPT"])
    answers = iter(["381", "391"])
    engine = engine_with(solver=lambda r: next(answers), checker=lambda r: next(verdicts))
    result = await engine.run("What is 17 * 23?")
    assert [t.role.value for t in result.turns] == ["thinker", "worker", "verifier", "worker", "verifier"]
    assert result.status == RunStatus.ACCEPTED and result.answer == "391"
    second_worker_prompt = result.turns[3].messages[0].content
    assert "381" in second_worker_prompt and "the product is wrong" in second_worker_prompt


async def test_max_turns_returns_last_answer() -> None:
    engine = engine_with(checker=lambda r: "REVISE: no")
    result = await engine.run("q", budget=Budget(max_turns=4))
    assert result.status == RunStatus.MAX_TURNS
    assert len(result.turns) == 4 and result.answer == "391"


async def test_fixed_is_one_call() -> None:
    result = await Engine(load_pool(SCRIPTED), "fixed:planner").run("q")
    assert result.status == RunStatus.ANSWERED
    assert len(result.turns) == 1 and result.turns[0].model == "planner"


async def test_worker_sees_the_plan() -> None:
    result = await Engine(load_pool(SCRIPTED), "rules").run("q")
    assert "1. Multiply." in result.turns[1].messages[0].content


async def test_prompted_follows_valid_choice() -> None:
    replies = iter(["WORKER", "verifier please", "THINKER"])
    engine = engine_with(
        "prompted", checker=lambda r: next(replies) if "coordinate" in r.messages[0].content else "ACCEPT"
    )
    result = await engine.run("q")
    assert [t.role.value for t in result.turns] == ["worker", "verifier"]
    assert result.status == RunStatus.ACCEPTED
    assert result.orchestration_prompt_tokens > 0  # the coordinator's own calls are accounted apart


async def test_prompted_falls_back_to_rules_on_nonsense() -> None:
    engine = engine_with("prompted", checker=lambda r: "banana" if "coordinate" in r.messages[0].content else "ACCEPT")
    result = await engine.run("q")
    assert [t.role.value for t in result.turns] == ["thinker", "worker", "verifier"]
    assert "rules fallback" in result.turns[0].reason


async def test_prompted_verifier_before_answer_is_rejected() -> None:
    engine = engine_with(
        "prompted", checker=lambda r: "VERIFIER" if "coordinate" in r.messages[0].content else "ACCEPT"
    )
    result = await engine.run("q")
    assert result.turns[0].role == Role.THINKER
    assert "before any answer" in result.turns[0].reason


async def test_failed_calls_end_with_failed_status_and_trace() -> None:
    engine = engine_with("fixed", solver=lambda r: "!error boom")
    pool = engine.pool.restrict(Policy(allowed_models=["solver"]))
    engine.pool = pool
    result = await engine.run("q")
    assert result.status == RunStatus.FAILED
    assert result.turns and "boom" in (result.turns[0].error or "")


async def test_fallback_to_other_worker_is_recorded() -> None:
    engine = engine_with("fixed:solver", solver=lambda r: "!error down")
    result = await engine.run("q")
    turn = result.turns[0]
    assert result.status == RunStatus.ANSWERED
    assert turn.fallback_from == "solver" and turn.model != "solver"
    assert any("down" in a for a in turn.attempts)


async def test_policy_excludes_models_from_every_role() -> None:
    result = await Engine(load_pool(SCRIPTED), "rules").run("q", policy=Policy(allowed_regions=["eu"]))
    assert {t.model for t in result.turns} <= {"planner", "checker"}
    assert all(t.region == "eu" for t in result.turns)


async def test_policy_without_worker_is_a_usage_error() -> None:
    with pytest.raises(PolicyError, match="worker"):
        await Engine(load_pool(SCRIPTED)).run("q", policy=Policy(allowed_regions=["mars"]))


async def test_empty_question_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty"):
        await Engine(load_pool(SCRIPTED)).run("   ")


async def test_cost_budget_refuses_unaffordable_call() -> None:
    result = await Engine(load_pool(SCRIPTED), "fixed:planner").run("q", budget=Budget(max_cost_usd=1e-9))
    assert result.status == RunStatus.BUDGET_EXHAUSTED
    assert "max_cost_usd" in result.reason and result.turns == []


async def test_deadline_returns_best_answer_so_far() -> None:
    engine = engine_with(checker=lambda r: "!sleep 5\nACCEPT")
    result = await engine.run("q", budget=Budget(deadline_s=0.3))
    assert result.status == RunStatus.BUDGET_EXHAUSTED and "deadline" in result.reason
    assert result.answer == "391"


async def test_token_budget() -> None:
    result = await Engine(load_pool(SCRIPTED)).run("q", budget=Budget(max_tokens=60))
    assert result.status == RunStatus.BUDGET_EXHAUSTED and "max_tokens" in result.reason
    assert result.total_tokens <= 60


async def test_streaming_emits_deltas_that_rebuild_the_output() -> None:
    deltas: dict[int, str] = {}

    def on_event(event) -> None:
        if type(event).__name__ == "TurnDelta":
            deltas[event.turn] = deltas.get(event.turn, "") + event.text

    engine = engine_with(solver=lambda r: "a long answer that streams in several chunks")
    result = await engine.run("q", stream=True, on_event=on_event)
    assert deltas[2] == result.turns[1].output == "a long answer that streams in several chunks"


async def test_concurrent_runs_share_nothing_mutable() -> None:
    engine = Engine(load_pool(SCRIPTED))
    results = await asyncio.gather(*(engine.run(f"q{i}") for i in range(20)))
    assert all(r.status == RunStatus.ACCEPTED and len(r.turns) == 3 for r in results)
    assert len({r.run_id for r in results}) == 20


async def test_async_function_backend() -> None:
    async def reply(request: CompletionRequest) -> str:
        await asyncio.sleep(0)
        return "async 391"

    result = await engine_with("fixed:solver", solver=reply).run("q")
    assert result.answer == "async 391"


async def test_same_verifier_is_not_asked_twice_about_one_answer() -> None:
    replies = iter(["WORKER", "VERIFIER", "VERIFIER", "VERIFIER"])
    engine = engine_with(
        "prompted", checker=lambda r: next(replies) if "coordinate" in r.messages[0].content else "REVISE: wrong"
    )
    result = await engine.run("q", budget=Budget(max_turns=4))
    assert [t.role.value for t in result.turns] == ["worker", "verifier", "worker", "verifier"]
    assert "already judged" in result.turns[2].reason


ROLE_POOL = """
name: roles
models:
  - {name: doer, backend: scripted, replies: ["42"], region: eu, roles: [worker]}
  - {name: planner-us, backend: scripted, replies: ["plan"], region: us, roles: [thinker, verifier, coordinator]}
defaults: {thinker: planner-us, worker: doer, verifier: planner-us, coordinator: planner-us}
"""


@pytest.mark.parametrize("coordinator", ["rules", "prompted"])
async def test_policy_leaving_no_thinker_or_verifier_still_answers(coordinator: str) -> None:
    from podium.pool import parse_pool

    engine = Engine(parse_pool(ROLE_POOL, "test"), coordinator)
    result = await engine.run("q", policy=Policy(allowed_regions=["eu"]))
    assert [(t.role.value, t.model) for t in result.turns] == [("worker", "doer")]
    assert result.status == RunStatus.ANSWERED and "unverified" in result.reason and result.answer == "42"


async def test_run_sends_worker_fields_to_worker_calls_only() -> None:
    """``Engine.run`` takes ``worker_fields`` as ``iter`` does: every worker call sends them as is."""
    sent: dict[str, list[dict]] = {"solver": [], "planner": [], "checker": []}

    def recorder(name: str, reply: str):
        return lambda r: sent[name].append(dict(r.passthrough)) or reply

    engine = engine_with(
        solver=recorder("solver", "391"), planner=recorder("planner", "plan"), checker=recorder("checker", "ACCEPT")
    )
    fields = {"response_format": {"type": "json_object"}}
    result = await engine.run("What is 17 * 23?", worker_fields=fields)
    assert result.status == RunStatus.ACCEPTED
    assert sent["solver"] == [fields]
    assert sent["planner"] == [{}] and sent["checker"] == [{}]
