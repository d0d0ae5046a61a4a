"""Workflows with a task's check (grounded verification) on the scripted conductor pool: best-of-n takes
the answer that passes the check over the judge's pick, verifier steps are the check's ACCEPT/REVISE
with the failing output as the next round's diagnosis, and without a check nothing changes."""

from __future__ import annotations

import itertools

import pytest
from test_workflows import engine_with, plan, step, text_of

from podium import Budget, RunStatus
from podium.coordinators import get_coordinator
from podium.errors import UsageError
from podium.types import CompletionRequest, Role, Verdict

CHECK_391 = {"type": "number", "answer": 391}


def cycling(*replies: str):
    """A scripted model answering with ``replies`` in turn (parallel samples get different answers)."""
    it = itertools.cycle(replies)
    return lambda r: next(it)


async def test_best_of_n_with_a_check_takes_the_passing_answer_not_the_judges_pick() -> None:
    engine, backends = engine_with(
        "topology:best-of-n", alpha=cycling("#### 390", "#### 391", "#### 392"), judge=lambda r: "#### 390"
    )
    result = await engine.run("What is 17 * 23?", check=CHECK_391)
    assert result.answer == "#### 391" and result.status == RunStatus.ANSWERED
    assert len(backends["alpha"].calls) == 3 and not backends["judge"].calls  # the check picked: no judge call
    pick = next(t for t in result.turns if t.step == "pick")
    assert pick.model == "check" and pick.provider == "check" and pick.cost_usd == 0
    assert "passed the answer of step a" in pick.reason


async def test_best_of_n_with_a_check_asks_the_judge_when_no_answer_passes() -> None:
    engine, backends = engine_with("topology:best-of-n", alpha=lambda r: "#### 390", judge=lambda r: "#### 7")
    result = await engine.run("What is 17 * 23?", check=CHECK_391)
    assert result.answer == "#### 7" and len(backends["judge"].calls) == 1
    pick = next(t for t in result.turns if t.step == "pick")
    assert pick.model == "judge" and "no answer passed the check (a1, a2, a3)" in pick.reason


async def test_best_of_n_without_a_check_is_unchanged_the_judge_picks() -> None:
    engine, backends = engine_with(
        "topology:best-of-n", alpha=cycling("#### 390", "#### 391", "#### 392"), judge=lambda r: "#### 390"
    )
    result = await engine.run("What is 17 * 23?")
    assert result.answer == "#### 390" and len(backends["judge"].calls) == 1
    assert all(t.model != "check" for t in result.turns)


async def test_best_of_n_n_fits_a_step_budget_and_the_check_pick_uses_one_step() -> None:
    engine, backends = engine_with("topology:best-of-n:2", alpha=cycling("#### 390", "#### 391"))
    result = await engine.run("What is 17 * 23?", check=CHECK_391, budget=Budget(max_turns=3))
    assert result.answer == "#### 391" and [t.step for t in result.turns].count("pick") == 1
    assert len(backends["alpha"].calls) == 2 and engine.coordinator.name == "topology:best-of-n:2"
    engine, _ = engine_with("topology:best-of-n:2", alpha=cycling("#### 390", "#### 391"))
    cut = await engine.run("What is 17 * 23?", check=CHECK_391, budget=Budget(max_turns=2))
    assert cut.status == RunStatus.BUDGET_EXHAUSTED and all(t.step != "pick" for t in cut.turns)


@pytest.mark.parametrize("name", ["topology:best-of-n:0", "topology:chain:2", "topology:moa:x"])
def test_bad_topology_counts_are_one_line_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="whole number >= 1"):
        get_coordinator(name)


async def test_verifier_steps_are_the_checks_verdict_and_its_failure_reaches_the_next_round() -> None:
    first = plan(step("w", "alpha", ["query"]), step("verify", "judge", ["query", "w"], role="verifier"))
    second = plan(
        step("fix", "gamma", ["query"], instruction="Fix the previous answer."),
        step("verify", "judge", ["query", "fix"], role="verifier"),
    )
    engine, backends = engine_with(
        conductor=lambda r: second if "A previous attempt answered" in text_of(r) else first,
        alpha=lambda r: "#### 390",
        gamma=lambda r: "#### 391",
        judge=lambda r: "VERDICT: ACCEPT",  # would wrongly accept 390: the check decides instead
    )
    result = await engine.run("What is 17 * 23?", check=CHECK_391)
    assert result.status == RunStatus.ACCEPTED and result.answer == "#### 391"
    assert not backends["judge"].calls
    checks = [t for t in result.turns if t.role == Role.VERIFIER]
    assert [(t.step, t.model, t.verdict) for t in checks] == [
        ("verify", "check", Verdict.REVISE),
        ("r2.verify", "check", Verdict.ACCEPT),
    ]
    assert checks[0].diagnosis and "390" in checks[0].diagnosis
    assert checks[0].diagnosis in text_of(backends["conductor"].calls[1])  # the follow-up plan sees the failure
    assert result.workflow["orchestration_calls"] == len(backends["conductor"].calls) == 2
    from podium.benchmark.runner import summarize_run
    from podium.checks import run_check
    from podium.tasks import Task

    task = Task.model_validate({"id": "t", "prompt": "What is 17 * 23?", "check": CHECK_391})
    row = summarize_run(task, "conductor", result, await run_check(CHECK_391, result.answer or ""))
    assert row["passed"] and row["turns"] == 4 and row["calls"] == 2 + 2  # two worker steps + two planning calls


async def test_nested_conductor_verifiers_are_still_models() -> None:
    """The check describes the whole task; a nested conductor's sub-task is verified by its model."""
    outer = plan(step("sub", "self", ["query"]), step("use", "alpha", ["query", "sub"]))
    inner = plan(step("w", "beta", ["query"]), step("v", "judge", ["query", "w"], role="verifier"))
    calls = iter([outer, inner])
    engine, backends = engine_with(
        conductor=lambda r: next(calls), alpha=lambda r: "#### 391", judge=lambda r: "ok\nVERDICT: ACCEPT"
    )
    result = await engine.run("What is 17 * 23?", check=CHECK_391)
    assert result.answer == "#### 391" and len(backends["judge"].calls) == 1
    assert next(t for t in result.turns if t.step == "sub/v").model == "judge"


async def test_workflow_verifier_calls_ask_for_the_verdict_protocol() -> None:
    engine, backends = engine_with("topology:chain", judge=lambda r: "Correct.\nVERDICT: ACCEPT")
    result = await engine.run("What is 17 * 23?")
    assert result.status == RunStatus.ACCEPTED
    (request,) = list(backends["judge"].calls)
    assert isinstance(request, CompletionRequest) and request.structured == "verdict"
    assert "VERDICT: ACCEPT" in text_of(request) and "VERDICT: REVISE" in text_of(request)
    assert all(r.structured is None for r in backends["alpha"].calls)  # planner and worker calls do not
