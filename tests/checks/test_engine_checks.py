"""Grounded verification: a run's check replaces the verifier model (no call, no cost)."""

from __future__ import annotations

from conftest import POOLS
from podium import Engine, Policy, Role, RunStatus, Verdict, aask, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.checks import NumberCheck

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
    result = await engine.run(
        "What is 17 * 23?", policy=Policy(exclude_models=["checker"]), check={"type": "regex", "pattern": "391"}
    )
    assert result.status == RunStatus.ACCEPTED
    assert result.turns[-1].model == "check"


async def test_without_a_check_the_verifier_model_still_decides() -> None:
    result = await Engine(load_pool(SCRIPTED), "rules").run("What is 17 * 23?")
    assert result.turns[-1].model == "checker" and result.status == RunStatus.ACCEPTED


async def test_aask_takes_a_check() -> None:
    result = await aask(
        "What is 17 * 23?", pool=load_pool(SCRIPTED), check={"type": "number", "answer": 1}, max_turns=3
    )
    assert result.status == RunStatus.MAX_TURNS
    assert result.turns[-1].model == "check" and result.turns[-1].verdict == Verdict.REVISE


async def test_verifier_calls_ask_for_the_verdict_protocol() -> None:
    requests: dict[str, list] = {"solver": [], "checker": []}
    engine = engine_with(
        solver=lambda r: requests["solver"].append(r) or "391",
        checker=lambda r: requests["checker"].append(r) or "VERDICT: ACCEPT",
    )
    result = await engine.run("What is 17 * 23?")
    assert result.status == RunStatus.ACCEPTED
    assert [r.structured for r in requests["checker"]] == ["verdict"]
    assert [r.structured for r in requests["solver"]] == [None]
    assert "VERDICT: ACCEPT" in requests["checker"][0].messages[0].content


CHECK_POOL = """
name: with-check
models:
  - name: solver
    backend: scripted
    replies: ["It is 380.", "It is 391."]
    roles: [worker]
  - name: has-391
    backend: check
    check: {type: regex, pattern: "\\\\b391\\\\b"}
defaults: {worker: solver, verifier: has-391}
"""


async def test_a_check_model_in_the_pool_verifies(tmp_path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(CHECK_POOL)
    pool = load_pool(path)
    assert pool.get("has-391").roles == ["verifier"]
    result = await Engine(pool, "rules").run("What is 17 * 23?")
    verifiers = [t for t in result.turns if t.role == Role.VERIFIER]
    assert [t.model for t in verifiers] == ["has-391", "has-391"]
    assert [t.verdict for t in verifiers] == [Verdict.REVISE, Verdict.ACCEPT]
    assert result.status == RunStatus.ACCEPTED and result.answer == "It is 391." and result.cost_usd == 0.0


def test_check_model_config_errors_name_the_fix(tmp_path) -> None:
    import pytest

    from podium.errors import ConfigError

    bad = {
        "no check": "  - name: c\n    backend: check\n",
        "other role": "  - name: c\n    backend: check\n    roles: [worker]\n    check: {type: exact, answer: x}\n",
        "check on a model": "  - name: c\n    backend: scripted\n    check: {type: exact, answer: x}\n",
        "bad check": "  - name: c\n    backend: check\n    check: {type: exact, answr: x}\n",
    }
    for label, model in bad.items():
        path = tmp_path / "pool.yaml"
        path.write_text("name: p\nmodels:\n" + model)
        with pytest.raises(ConfigError) as err:
            load_pool(path)
        assert "models.0" in str(err.value), label


async def test_a_bad_check_is_a_usage_error() -> None:
    import pytest

    from podium.errors import UsageError

    with pytest.raises(UsageError, match="answer"):
        await Engine(load_pool(SCRIPTED), "rules").run("q", check={"type": "number"})


async def test_the_run_deadline_stops_a_running_check_and_its_processes() -> None:
    import os
    import time

    from podium import Budget
    from podium.checks.sandbox import UID_BASE, UID_SPAN, _live_uid

    engine = engine_with(solver=lambda r: "def f():\n    while True:\n        pass", checker=never)
    started = time.monotonic()
    result = await engine.run("Write f.", budget=Budget(deadline_s=2), check={"type": "python_tests", "tests": ["f()"]})
    assert time.monotonic() - started < 5
    assert result.status == RunStatus.BUDGET_EXHAUSTED
    left = [e for e in os.listdir("/proc") if e.isdigit() and UID_BASE <= (_live_uid(e) or 0) < UID_BASE + UID_SPAN]
    assert left == []


async def test_a_bad_check_with_a_workflow_coordinator_is_a_usage_error_before_any_call() -> None:
    """A valid check grounds a workflow's verifier steps (tests/workflows/test_workflows_grounded.py); a bad one
    stops the run before any call, as for the turn loop."""
    import pytest

    from podium.errors import UsageError

    pool = load_pool(SCRIPTED)
    engine = Engine(
        pool,
        "topology:chain",
        backends=BackendSet(overrides={n: ScriptedBackend(pool.get(n), never) for n in pool.models}),
    )
    with pytest.raises(UsageError, match="bad check"):
        await engine.run("What is 17 * 23?", check={"type": "nope"})
