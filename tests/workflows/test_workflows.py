"""Workflow runs (conductor, topologies, hand-written workflows) on scripted pools: validation before
any call, parallel execution from recorded spans, access isolation, recursion, budgets, repair,
fallbacks and policy."""

from __future__ import annotations

import json

import pytest

from conftest import POOLS
from podium import Budget, Engine, Policy, RunStatus, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.coordinators import get_coordinator
from podium.engine import TurnStarted
from podium.errors import UsageError
from podium.types import CompletionRequest, Verdict
from podium.workflows import Workflow, WorkflowError, check_against_pool, parse_workflow

POOL = POOLS / "conductor.yaml"


def engine_with(
    coordinator: str = "conductor", options: dict | None = None, **functions
) -> tuple[Engine, dict[str, ScriptedBackend]]:
    """An engine on the conductor test pool whose models reply with the given functions."""
    pool = load_pool(POOL)
    backends = {name: ScriptedBackend(spec) for name, spec in pool.models.items()}
    for name, fn in functions.items():
        backends[name] = ScriptedBackend(pool.get(name), fn)
    planner = get_coordinator(coordinator)
    for key, value in (options or {}).items():
        setattr(planner, key, value)
    return Engine(pool, planner, backends=BackendSet(overrides=backends)), backends


def plan(*steps: dict, final: str | None = None) -> str:
    return json.dumps({"reason": "test plan", "steps": list(steps), **({"final": final} if final else {})})


def step(id: str, model: str, access: list[str], role: str = "worker", instruction: str | None = None) -> dict:
    return {"id": id, "model": model, "role": role, "instruction": instruction or f"do {id}", "access": access}


def write(tmp_path, workflow: dict) -> str:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    return f"workflow:{path}"


def text_of(request: CompletionRequest) -> str:
    return "\n".join(m.content for m in request.messages)


# --- validation before any call --------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, final, message",
    [
        ([step("a", "alpha", ["query", "b"]), step("b", "beta", ["a"])], None, "cycle a -> b -> a"),
        ([step("a", "alpha", ["a"])], None, "cycle a -> a"),
        ([step("a", "alpha", ["query", "zzz"])], None, "unknown step(s) ['zzz']"),
        ([step("a", "alpha", ["b"]), step("b", "beta", ["query"])], None, "listed after it"),
        ([step("a", "alpha", ["query"]), step("a", "beta", ["query"])], None, "duplicate step ids ['a']"),
        ([], None, "steps: List should have at least 1 item"),
        ([step(f"s{i}", "alpha", ["query"]) for i in range(17)], None, "at most 16 items"),
        ([step("a", "alpha", ["query"])], "nope", "final 'nope' is not a step"),
    ],
)
def test_structural_errors_are_one_precise_line(steps, final, message) -> None:
    with pytest.raises(WorkflowError) as err:
        parse_workflow({"steps": steps, **({"final": final} if final else {})}, "wf.json")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("wf.json: ")


def test_pool_checks_models_roles_policy_and_size() -> None:
    pool = load_pool(POOL)

    def check(wf: dict, p=pool, **kw) -> str:
        with pytest.raises(WorkflowError) as err:
            check_against_pool(parse_workflow(wf), p, allow_self=kw.pop("allow_self", False), **kw)
        return str(err.value)

    assert "unknown model 'gpt-9'" in check({"steps": [step("a", "gpt-9", ["query"])]})
    assert "may not take role 'verifier'" in check({"steps": [step("a", "beta", ["query"], role="verifier")]})
    assert "not allowed by the policy" in check(
        {"steps": [step("a", "beta", ["query"])]}, pool.restrict(Policy(allowed_regions=["eu"]))
    )
    assert "'self' is not allowed at depth 2" in check({"steps": [step("a", "self", ["query"])]}, depth=2, max_depth=2)
    assert "only 1 fit the step budget" in check(
        {"steps": [step("a", "alpha", ["query"]), step("b", "beta", ["a"])]}, max_steps=1
    )


async def test_invalid_workflow_file_is_rejected_before_any_call(tmp_path) -> None:
    with pytest.raises(UsageError, match="cycle a -> b -> a"):  # structure: when the coordinator is built
        engine_with(write(tmp_path, {"steps": [step("a", "alpha", ["query", "b"]), step("b", "beta", ["a"])]}))
    engine, backends = engine_with(write(tmp_path, {"steps": [step("a", "nonexistent", ["query"])]}))
    with pytest.raises(UsageError, match="unknown model 'nonexistent'"):  # models: when the run starts
        await engine.run("q")
    assert all(not b.calls for b in backends.values())


async def test_policy_violation_in_a_workflow_is_rejected_before_any_call(tmp_path) -> None:
    engine, backends = engine_with(
        write(tmp_path, {"steps": [step("a", "alpha", ["query"]), step("b", "beta", ["query", "a"])]})
    )
    with pytest.raises(UsageError, match="'beta' is not allowed by the policy"):
        await engine.run("q", policy=Policy(allowed_regions=["eu"]))
    assert all(not b.calls for b in backends.values())


# --- execution as a graph --------------------------------------------------------------------


async def test_independent_steps_overlap_in_time_and_dependents_wait() -> None:
    slow = lambda name: lambda r: f"!sleep 0.3\n{name} answer"  # noqa: E731
    engine, _ = engine_with("topology:moa", alpha=slow("alpha"), beta=slow("beta"), gamma=slow("gamma"))
    result = await engine.run("What is 17 * 23?")
    assert result.status == RunStatus.ANSWERED
    spans = {t.step: (t.started_at, t.ended_at) for t in result.turns}
    proposers = [spans[s] for s in ("p1", "p2", "p3")]
    for i, (s1, e1) in enumerate(proposers):
        for s2, e2 in proposers[i + 1 :]:
            assert s1 < e2 and s2 < e1  # each pair of independent steps overlaps (recorded spans)
    assert spans["aggregate"][0] >= max(e for _, e in proposers)  # the aggregator waited for all inputs


async def test_max_parallel_one_serialises_the_calls() -> None:
    slow = lambda r: "!sleep 0.1\nok"  # noqa: E731
    engine, _ = engine_with("topology:moa", {"max_parallel": 1}, alpha=slow, beta=slow, gamma=slow)
    result = await engine.run("q")
    spans = sorted((t.started_at, t.ended_at) for t in result.turns)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


async def test_a_step_sees_exactly_the_outputs_in_its_access(tmp_path) -> None:
    wf = {
        "steps": [
            step("s1", "alpha", ["query"]),
            step("s2", "beta", ["query"]),
            step("s3", "gamma", ["s1"]),
            step("s4", "alpha", ["s2", "s3"]),
            step("s5", "judge", ["query", "s1", "s4"]),
        ]
    }
    engine, _ = engine_with(
        write(tmp_path, wf),
        alpha=lambda r: "OUT-" + text_of(r).split("do ")[1].split()[0],
        beta=lambda r: "OUT-s2",
        gamma=lambda r: "OUT-s3",
        judge=lambda r: "OUT-s5",
    )
    result = await engine.run("SECRET-QUERY")
    assert result.status == RunStatus.ANSWERED and result.answer == "OUT-s5"
    by_step = {t.step: t for t in result.turns}
    for s in wf["steps"]:
        prompt = text_of(CompletionRequest(messages=by_step[s["id"]].messages))
        seen = {o for o in ("OUT-s1", "OUT-s2", "OUT-s3", "OUT-s4", "OUT-s5") if o in prompt}
        assert seen == {f"OUT-{a}" for a in s["access"] if a != "query"}, s["id"]
        assert ("SECRET-QUERY" in prompt) == ("query" in s["access"]), s["id"]
        assert by_step[s["id"]].inputs == s["access"]


async def test_final_verifier_revise_runs_a_follow_up_round() -> None:
    verdicts = iter(["REVISE: the product is wrong", "ACCEPT"])
    answers = iter(["381", "391"])
    engine, _ = engine_with(
        "topology:chain",
        alpha=lambda r: "1. multiply" if "numbered plan" in text_of(r) else next(answers),
        judge=lambda r: next(verdicts),
    )
    result = await engine.run("What is 17 * 23?")
    assert result.status == RunStatus.ACCEPTED and result.answer == "391"
    assert [t.step for t in result.turns] == ["plan", "work", "verify", "r2.plan", "r2.work", "r2.verify"]
    assert "the product is wrong" in text_of(CompletionRequest(messages=result.turns[4].messages))
    assert result.turns[2].verdict == Verdict.REVISE


async def test_final_step_is_announced_for_live_streaming() -> None:
    events: list[TurnStarted] = []
    engine, _ = engine_with("topology:moa")
    await engine.run("q", on_event=lambda e: events.append(e) if isinstance(e, TurnStarted) else None)
    assert [e.final for e in events] == [False, False, False, True]


# --- failures, budgets, policy ---------------------------------------------------------------


async def test_a_failing_step_falls_back_to_another_provider() -> None:
    engine, backends = engine_with("topology:chain", alpha=lambda r: "!error provider down")
    result = await engine.run("q")
    work = next(t for t in result.turns if t.step == "work")
    assert work.fallback_from == "alpha" and work.model != "alpha" and work.error is None
    assert any("provider down" in a for a in work.attempts)
    assert result.answer == work.output and result.status == RunStatus.ACCEPTED
    assert "(not available: that step failed)" in work.messages[0].content  # its planner (alpha only) failed


async def test_step_budget_cut_mid_graph_keeps_finished_steps() -> None:
    engine, _ = engine_with("topology:chain")
    result = await engine.run("q", budget=Budget(max_turns=2))
    assert result.status == RunStatus.BUDGET_EXHAUSTED and "max_turns" in result.reason
    assert [t.step for t in result.turns] == ["plan", "work"]
    assert result.answer == "alpha says 391"


async def test_cost_budget_cut_mid_graph_makes_no_unaffordable_call() -> None:
    engine, backends = engine_with("topology:moa")
    probe = await engine_with("topology:moa")[0].run("q")
    one_call = max(t.cost_usd for t in probe.turns)
    result = await engine.run("q", budget=Budget(max_cost_usd=one_call * 2.5))
    assert result.status == RunStatus.BUDGET_EXHAUSTED and "max_cost_usd" in result.reason
    assert 1 <= len(result.turns) < 4 and result.cost_usd <= one_call * 2.5
    assert result.answer is not None


async def test_deadline_keeps_finished_steps_and_records_the_cut_one() -> None:
    engine, _ = engine_with("topology:chain", judge=lambda r: "!sleep 5\nACCEPT")
    result = await engine.run("q", budget=Budget(deadline_s=0.5))
    assert result.status == RunStatus.BUDGET_EXHAUSTED and "deadline" in result.reason
    assert result.answer == "alpha says 391"
    assert "interrupted" in (result.turns[-1].error or "") and result.turns[-1].step == "verify"


async def test_policy_restricted_run_never_reaches_another_region() -> None:
    us_plan = plan(step("s1", "beta", ["query"]), step("s2", "alpha", ["query", "s1"]))
    engine, backends = engine_with("conductor", conductor=lambda r: us_plan)
    result = await engine.run("q", policy=Policy(allowed_regions=["eu"]))
    assert not backends["beta"].calls
    assert {t.region for t in result.turns} == {"eu"}
    assert "not allowed by the policy" in result.workflow["plans"][0]["origin"]


# --- the conductor -----------------------------------------------------------------------------


async def test_conductor_plan_runs_with_focused_instructions() -> None:
    good = plan(
        step("math", "alpha", ["query"], instruction="Compute the product only."),
        step("prose", "beta", ["query"], instruction="Explain in one sentence."),
        step("merge", "judge", ["query", "math", "prose"], instruction="Merge both."),
    )
    engine, backends = engine_with(conductor=lambda r: good)
    result = await engine.run("What is 17 * 23? Explain.")
    assert [t.step for t in result.turns][-1] == "merge" and result.status == RunStatus.ANSWERED
    math = next(t for t in result.turns if t.step == "math")
    assert math.model == "alpha" and math.messages[0].content.startswith("Compute the product only.")
    prompt = text_of(backends["conductor"].calls[0])
    assert "alpha: roles thinker/worker; strengths: arithmetic; $1/$2" in prompt and "region us" in prompt
    assert backends["conductor"].calls[0].response_format["json_schema"]["schema"]["properties"]["steps"]
    assert result.orchestration_prompt_tokens > 0
    assert result.workflow["plans"][0]["origin"] == "conductor plan by conductor"


async def test_garbage_conductor_output_is_repaired_once() -> None:
    replies = iter(["banana", plan(step("a", "alpha", ["query"]))])
    engine, backends = engine_with(conductor=lambda r: next(replies))
    result = await engine.run("q")
    assert len(backends["conductor"].calls) == 2
    assert "no complete JSON object" in text_of(backends["conductor"].calls[1])  # the repair shows the error
    assert "after one repair" in result.workflow["plans"][0]["origin"]
    assert [t.step for t in result.turns] == ["a"]


async def test_garbage_twice_falls_back_to_the_default_topology() -> None:
    engine, backends = engine_with(conductor=lambda r: plan(step("a", "gpt-9", ["query"])))
    result = await engine.run("q")
    assert len(backends["conductor"].calls) == 2
    origin = result.workflow["plans"][0]["origin"]
    assert origin.startswith("default topology chain: conductor output invalid after one repair") and "gpt-9" in origin
    assert [t.step for t in result.turns] == ["plan", "work", "verify"] and result.status == RunStatus.ACCEPTED
    assert origin in result.turns[0].reason  # each step's trace says why this topology ran


async def test_conductor_call_failure_falls_back() -> None:
    engine, _ = engine_with(conductor=lambda r: "!error conductor offline")
    result = await engine.run("q")
    assert "conductor call to conductor failed" in result.workflow["plans"][0]["origin"]
    assert result.status == RunStatus.ACCEPTED


async def test_recursion_stops_at_max_depth() -> None:
    def always_recurse(r: CompletionRequest) -> str:  # a recursion bomb: nests whenever 'self' is offered
        if "- self:" in text_of(r):
            return plan(
                step("deeper", "self", ["query"], instruction="solve the sub-task"),
                step("use", "alpha", ["query", "deeper"]),
            )
        return plan(step("leaf", "alpha", ["query"]))

    engine, backends = engine_with(conductor=always_recurse, options={"max_depth": 2})
    result = await engine.run("q")
    assert result.status == RunStatus.ANSWERED
    assert max(t.depth for t in result.turns) == 2
    assert len(backends["conductor"].calls) == 3  # depth 0, 1, 2: no more
    assert sorted(t.step for t in result.turns if t.model == "self") == ["deeper", "deeper/deeper"]
    assert any(t.step == "deeper/deeper/leaf" and t.depth == 2 for t in result.turns)


async def test_recursion_shares_the_parents_step_budget() -> None:
    def always_recurse(r: CompletionRequest) -> str:
        return plan(step("deeper", "self", ["query"]), step("use", "alpha", ["query", "deeper"]))

    engine, backends = engine_with(conductor=always_recurse, options={"max_depth": 5})
    result = await engine.run("q", budget=Budget(max_turns=3))
    assert result.status == RunStatus.BUDGET_EXHAUSTED
    assert sum(1 for _ in result.turns) <= 3 and len(backends["conductor"].calls) <= 4


def test_workflow_round_trips_and_prints() -> None:
    wf = Workflow.model_validate(
        {"steps": [step("a", "alpha", ["query"]), step("b", "judge", ["query", "a"], role="verifier")]}
    )
    assert wf.final_step.id == "b"
    assert "b          verifier judge" in wf.text() and "sees [query, a]" in wf.text()


async def test_conductor_sees_the_outcome_and_writes_a_follow_up_round() -> None:
    first = plan(step("w", "alpha", ["query"]), step("check", "judge", ["query", "w"], role="verifier"))
    second = plan(
        step("fix", "gamma", ["query"], instruction="Fix the previous answer."),
        step("check", "judge", ["query", "fix"], role="verifier"),
    )
    verdicts = iter(["REVISE: the product is wrong", "ACCEPT"])
    engine, backends = engine_with(
        conductor=lambda r: second if "A previous attempt answered" in text_of(r) else first,
        judge=lambda r: next(verdicts),
    )
    result = await engine.run("What is 17 * 23?")
    assert result.status == RunStatus.ACCEPTED and result.answer == "gamma says 391"
    assert [t.step for t in result.turns] == ["w", "check", "r2.fix", "r2.check"]
    follow_up = text_of(backends["conductor"].calls[1])
    assert "alpha says 391" in follow_up and "the product is wrong" in follow_up
    assert [p["round"] for p in result.workflow["plans"]] == [1, 2]


async def test_hash_mode_stores_no_plan_text(tmp_path) -> None:
    from podium.traces.store import Store

    secret = plan(step("s1", "alpha", ["query"], instruction="TOP-SECRET instruction"))
    engine, _ = engine_with(conductor=lambda r: secret)
    result = await engine.run("SECRET-QUERY")
    store = Store.open(tmp_path / "t.db", text_mode="hash")
    store.record(result)
    run = store.run(result.run_id)
    assert run["workflow"] is None and run["turns"][0]["step"] == "s1" and run["turns"][0]["inputs"] == ["query"]
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"TOP-SECRET" not in raw and b"SECRET-QUERY" not in raw
    full = Store.open(tmp_path / "full.db")
    full.record(result)
    assert (
        full.run(result.run_id)["workflow"]["plans"][0]["workflow"]["steps"][0]["instruction"]
        == "TOP-SECRET instruction"
    )


def test_a_tier_can_use_a_conductor_with_its_limits(tmp_path) -> None:
    pytest.importorskip("fastapi", reason="the server extra")
    from podium.errors import ConfigError
    from podium.server.tiers import load_tiers

    path = tmp_path / "tiers.yaml"
    path.write_text(
        "tiers:\n  - {name: podium-ultra, coordinator: conductor, max_turns: 10, max_depth: 3, max_parallel: 2}\n"
        "  - {name: podium-moa, coordinator: 'topology:moa'}\n"
    )
    tiers = load_tiers(path).by_name()
    planner = tiers["podium-ultra"].coordinator_for()
    assert planner.name == "conductor" and (planner.max_depth, planner.max_parallel) == (3, 2)
    assert tiers["podium-moa"].coordinator_for().name == "topology:moa"
    path.write_text("tiers:\n  - {name: x, coordinator: conductor, max_depth: 9}\n")
    with pytest.raises(ConfigError, match="max_depth"):
        load_tiers(path)
