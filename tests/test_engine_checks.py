"""Grounded verification: a run's check replaces the verifier model (no call, no cost)."""

from __future__ import annotations

from podium import Engine, Policy, Role, RunStatus, Verdict, aask, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.checks import NumberCheck

from conftest import POOLS

SCRIPTED = POOLS / "scripted.yaml"


def never(request) -> str:
    raise AssertionError("the verifier model must not be called when the run has a check")


def engine_with(**functions) -> Engine:
    pool = load_pool(SCRIPTED)
    overrides = {name: ScriptedBackend(pool.get(name), fn) for name, fn in functions.items()}
    return Engine(pool, "rules", backends=BackendSet(overrides=overrides))


async def test_number_check_revises_then_accepts_without_a_model_call() -> None:
    answers = iter(["17 * 23 = 381", "17 * 23 = 391"])
    engine = engine_with(solver=lambda r: next(answers), checker=never)
    result = await engine.run("What is 17 * 23?", check=NumberCheck(answer=391))
    assert [t.role for t in result.turns] == [Role.THINKER, Role.WORKER, Role.VERIFIER, Role.WORKER, Role.VERIFIER]
    first, last = result.turns[2], result.turns[4]
    assert first.model == "check" and first.verdict == Verdict.REVISE and "381" in first.diagnosis
    assert last.model == "check" and last.verdict == Verdict.ACCEPT
    assert first.cost_usd == 0.0 and first.prompt_tokens == 0 and first.completion_tokens == 0
    assert result.status == RunStatus.ACCEPTED and result.answer == "17 * 23 = 391"
    # the next worker sees the check's diagnosis as its feedback
    assert "381" in result.turns[3].messages[0].content and first.diagnosis in result.turns[3].messages[0].content


async def test_python_check_feeds_the_failing_test_to_the_worker() -> None:
    buggy = "```python\ndef double(x):\n    return x + 2\n```"
    fixed = "```python\ndef double(x):\n    return x * 2\n```"
    answers = iter([buggy, fixed])
    engine = engine_with(solver=lambda r: next(answers), checker=never)
    check = {"type": "python_tests", "tests": ["assert double(2) == 4", "assert double(5) == 10"]}
    result = await engine.run("Write double(x).", check=check)
    assert result.status == RunStatus.ACCEPTED and result.answer == fixed
    feedback = result.turns[3].messages[0].content
    assert "assert double(5) == 10" in feedback and "got: 7" in feedback


async def test_check_verifies_even_when_no_verifier_model_is_allowed() -> None:
    engine = engine_with(checker=never)
    result = await engine.run("What is 17 * 23?", policy=Policy(exclude_models=["checker"]), check={"type": "regex", "pattern": "391"})
    assert result.status == RunStatus.ACCEPTED
    assert result.turns[-1].model == "check"


async def test_without_a_check_the_verifier_model_still_decides() -> None:
    result = await Engine(load_pool(SCRIPTED), "rules").run("What is 17 * 23?")
    assert result.turns[-1].model == "checker" and result.status == RunStatus.ACCEPTED


async def test_aask_takes_a_check() -> None:
    result = await aask("What is 17 * 23?", pool=load_pool(SCRIPTED), check={"type": "number", "answer": 1}, max_turns=3)
    assert result.status == RunStatus.MAX_TURNS
    assert result.turns[-1].model == "check" and result.turns[-1].verdict == Verdict.REVISE
