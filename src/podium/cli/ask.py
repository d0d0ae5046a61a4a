"""``podium ask``: orchestrate one question and show the answer with its trace."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click
from pydantic import ValidationError

from ..checks import CheckSpec, parse_check
from ..coordinators import COORDINATORS, get_coordinator
from ..engine import Engine, Event, EventHandler, RunFinished, TurnFinished, TurnStarted
from ..pool import Policy, load_pool
from ..preflight import check_pool
from ..scrub import clean_text, scrub, scrub_value
from ..traces.store import recorder
from ..types import Budget, RunResult, RunStatus
from .helptext import ENVIRONMENT
from .options import pool_option


def render_table(result: RunResult) -> str:
    """A compact fixed-width trace table."""
    head = f"{'#':>2}  {'role':<8}  {'model':<22}  {'tok in':>6}  {'tok out':>7}  {'cost $':>9}  {'time s':>6}  verdict/error"
    rows = [head, "-" * len(head)]
    for t in result.turns:
        note = (t.error and f"error: {t.error[:40]}") or (t.verdict.value if t.verdict else "")
        if t.fallback_from:
            note = f"{note} (fallback from {t.fallback_from})".strip()
        if t.step:
            note = f"step {t.step} {note}".strip()
        rows.append(
            f"{t.turn:>2}  {t.role.value:<8}  {t.model[:22]:<22}  {t.prompt_tokens:>6}  {t.completion_tokens:>7}  {t.cost_usd:>9.6f}  {t.latency_s:>6.2f}  {note}"
        )
    rows.append(
        f"status: {result.status.value} ({result.reason}); {len(result.turns)} turns, {result.total_tokens} tokens, ${result.cost_usd:.6f}, {result.latency_s:.1f}s; trace {result.run_id} (podium traces show {result.run_id[-8:]})"
    )
    return "\n".join(rows)


def live_printer(enabled: bool) -> EventHandler:
    """An event handler that prints each turn as it starts and ends (to stderr)."""
    started: dict[int, float] = {}
    open_line: list[int | None] = [None]  # the turn whose start line awaits its end (workflow steps overlap)

    def on_event(event: Event) -> None:
        if not enabled:
            return
        if isinstance(event, TurnStarted):
            started[event.turn] = time.perf_counter()
            if open_line[0] is not None:
                click.echo("", err=True)
            click.echo(scrub(f"[turn {event.turn}] {event.role.value:<8} {event.model} ... "), err=True, nl=False)
            open_line[0] = event.turn
        elif isinstance(event, TurnFinished):
            t = event.turn
            note = f"error: {t.error[:60]}" if t.error else (t.verdict.value if t.verdict else "done")
            prefix = "" if open_line[0] == t.turn else f"[turn {t.turn}] {t.step or t.role.value} "
            click.echo(
                scrub(f"{prefix}{time.perf_counter() - started.get(t.turn, time.perf_counter()):.1f}s {note}"), err=True
            )
            open_line[0] = None
        elif isinstance(event, RunFinished):
            click.echo(scrub(f"[{event.result.status.value}] {event.result.reason}"), err=True)

    return on_event


def read_question(words: tuple[str, ...]) -> str:
    """The question from the arguments, else from stdin when it is piped. Bytes that are not UTF-8
    (``$'what is \\xff?'``) become U+FFFD here, so the run can be sent, printed and stored."""
    if words:
        return clean_text(" ".join(words))  # argv decodes bad bytes to lone surrogates
    if not sys.stdin.isatty():
        raw = getattr(sys.stdin, "buffer", None)
        return raw.read().decode("utf-8", "replace") if raw is not None else clean_text(sys.stdin.read())
    return ""


def parse_check_option(ctx: click.Context, param: click.Parameter, value: str | None) -> CheckSpec | None:
    """``--check '{"type": "number", "answer": 42}'`` as a CheckSpec; a bad one is a usage error (exit 2)."""
    if value is None:
        return None
    try:
        return parse_check(json.loads(value))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f'not JSON ({exc.msg}); e.g. --check \'{{"type": "number", "answer": 42}}\'') from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])  # loc[0] is the union tag
        raise click.BadParameter(
            f"{where + ': ' if where else ''}{first['msg']}; types: exact, regex, number, python_tests (see docs/checks.md)"
        ) from None


def plan_text(result: RunResult) -> str:
    """The workflow(s) a workflow run executed (``--show-plan``); empty for turn-loop coordinators."""
    from ..workflows.types import Workflow

    blocks = []
    for p in (result.workflow or {}).get("plans", []):
        where = (
            f"depth {p['depth']}"
            + (f", inside step {p['step']}" if p["step"] else "")
            + (f", round {p['round']}" if p["round"] > 1 else "")
        )
        blocks.append(f"plan ({where}) from {p['origin']}\n{Workflow.model_validate(p['workflow']).text()}")
    return "\n".join(blocks)


async def run_once(
    pool_ref: str,
    coordinator: str,
    question: str,
    limits: dict[str, Any],
    policy: Policy,
    live: bool,
    workflow_options: dict[str, Any] | None = None,
    check: CheckSpec | None = None,
) -> RunResult:
    """One run; ``limits`` (flags left unset are None) override the pool's default budget."""
    pool = load_pool(pool_ref)
    check_pool(pool.restrict(policy))  # missing keys, GGUF or extra: one line, exit 2, before anything is sent
    budget = Budget.model_validate(
        {**pool.config.budget.model_dump(), **{k: v for k, v in limits.items() if v is not None}}
    )
    chosen = get_coordinator(coordinator)
    for key, value in (workflow_options or {}).items():
        if value is not None and getattr(chosen, "plans_workflows", False):
            setattr(chosen, key, value)
    engine = Engine(pool, chosen, on_event=live_printer(live))
    try:
        store = recorder("cli", warn=lambda msg: click.echo(scrub(f"warning: {msg}"), err=True))  # every run is traced
        return await engine.run(question, budget=budget, policy=policy, on_event=store, check=check)
    finally:
        await engine.aclose()


@click.command(epilog=ENVIRONMENT)
@click.argument("question", nargs=-1)
@pool_option
@click.option(
    "--coordinator",
    default="rules",
    show_default=True,
    help=" | ".join(COORDINATORS) + " | a plugin's (entry point group podium.coordinators)",
)
@click.option(
    "--max-turns", type=click.IntRange(1, 100), default=None, help="Turn limit (default: the pool's budget, else 5)."
)
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Token budget for the whole run.")
@click.option("--max-cost", type=click.FloatRange(0), default=None, help="Cost budget in USD for the whole run.")
@click.option("--deadline", type=click.FloatRange(0, min_open=True), default=None, help="Wall-clock budget in seconds.")
@click.option("--exclude", multiple=True, help="Leave this model out of the run (repeatable).")
@click.option("--region", "regions", multiple=True, help="Only send data to models in this region (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: answer, status, turns.")
@click.option(
    "--check",
    callback=parse_check_option,
    default=None,
    metavar="JSON",
    help='Verify by this check instead of a verifier model, e.g. \'{"type": "number", "answer": 42}\' (docs/checks.md).',
)
@click.option("--show-plan", is_flag=True, help="Workflow coordinators: print the workflow(s) that ran.")
@click.option(
    "--max-depth",
    type=click.IntRange(0, 5),
    default=None,
    help="Workflow coordinators: nesting limit of 'self' steps (default 2).",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1, 64),
    default=None,
    help="Workflow coordinators: concurrent model calls (default 4).",
)
def ask(
    question: tuple[str, ...],
    pool_ref: str,
    coordinator: str,
    max_turns: int | None,
    max_tokens: int | None,
    max_cost: float | None,
    deadline: float | None,
    exclude: tuple[str, ...],
    regions: tuple[str, ...],
    as_json: bool,
    show_plan: bool,
    max_depth: int | None,
    max_parallel: int | None,
    check: CheckSpec | None,
) -> None:
    """Orchestrate QUESTION (or stdin) over the pool and print the answer and its trace.

    \b
    Examples:
      podium ask "What is 17 * 23?"                 # embedded offline pool, rules coordinator
      podium ask --json "..." | jq .answer
      echo "question" | podium ask --pool openrouter --coordinator prompted --max-turns 6
      podium ask --pool my-pool.yaml --max-cost 0.01 --deadline 30 --region eu "..."
      podium ask --coordinator fixed:MODEL "..."    # one model, one call: the baseline
      podium ask --coordinator learned:head.npz "..."
      podium ask --check '{"type": "number", "answer": 391}' "What is 17 * 23?"
      podium ask --coordinator conductor --show-plan "..."   # a model writes the workflow

    \b
    Status (the run's outcome, in the table and in --json):
      accepted          a verifier accepted the answer
      answered          the coordinator stopped without verification (fixed)
      max_turns         the turn limit ran out; the best answer so far is shown
      budget_exhausted  tokens, cost or deadline ran out ('reason' says which)
      failed            no answer: every call failed

    \b
    Exit codes:
      0  a finished run (any status but failed)
      1  failed: no model produced an answer (the trace is kept)
      2  misuse: bad flag, bad pool file, missing API key or GGUF, unknown
         model or coordinator (one line on stderr, nothing was sent)
    """
    limits = {"max_turns": max_turns, "max_tokens": max_tokens, "max_cost_usd": max_cost, "deadline_s": deadline}
    options = {"max_depth": max_depth, "max_parallel": max_parallel}
    _ask(question, pool_ref, coordinator, limits, (exclude, regions), options, check, as_json, show_plan)


def _ask(
    question: tuple[str, ...],
    pool_ref: str,
    coordinator: str,
    limits: dict[str, Any],
    policy_args: tuple[tuple[str, ...], tuple[str, ...]],
    options: dict[str, Any],
    check: CheckSpec | None,
    as_json: bool,
    show_plan: bool,
) -> None:
    """``podium ask`` once its options are parsed: run the question, print the answer, exit 1 if it failed."""
    text = read_question(question).strip()
    if not text:
        raise click.UsageError("the question is empty: pass it as an argument or on stdin")
    exclude, regions = policy_args
    policy = Policy(exclude_models=list(exclude), allowed_regions=list(regions) or None)
    live = not as_json and sys.stderr.isatty()
    result = asyncio.run(run_once(pool_ref, coordinator, text, limits, policy, live, options, check))
    if show_plan and not as_json:
        click.echo((plan_text(result) or "(this coordinator writes no workflow)") + "\n")
    if as_json:
        click.echo(json.dumps(scrub_value(result.to_json()), indent=2))
    else:
        click.echo(scrub(f"{result.answer if result.answer is not None else '(no answer)'}\n"))
        click.echo(scrub(render_table(result)))
    if result.status == RunStatus.FAILED:
        sys.exit(1)
