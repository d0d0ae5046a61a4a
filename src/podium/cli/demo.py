"""``podium demo``: single call vs the podium loop on tasks with executable checks (``make demo``)."""

from __future__ import annotations

import asyncio
import time

import click

from .options import pool_option

STAND_IN = (
    "The embedded pool is SmolLM2-135M, a tiny model running offline as a stand-in for real "
    "pools: absolute scores are low and change with the tasks and the seed; what carries over is the mechanism "
    "(an answer is only accepted when its tests pass, and a failing test goes back to the worker)."
)


async def run_demo(pool_ref: str, tasks_file: str | None, max_turns: int, plan: bool, limit: int | None) -> None:
    from ..demo import demo_pool, load_tasks, row, run_task, summary
    from ..engine import Engine
    from ..pool import load_pool
    from ..preflight import check_pool
    from ..traces.store import recorder
    from ..types import Budget

    tasks = load_tasks(tasks_file)[:limit]
    check_pool(load_pool(pool_ref))
    pool, loop_pool = demo_pool(load_pool(pool_ref), plan=True), demo_pool(load_pool(pool_ref), plan=plan)
    single = Engine(pool, "fixed")
    loop = Engine(loop_pool, "rules", backends=single.backends, breakers=single.breakers)
    store = recorder("demo", warn=lambda msg: click.echo(f"warning: {msg}", err=True))
    click.echo(f"podium demo: {len(tasks)} tasks on pool '{pool.name}', each graded by running its check.")
    click.echo(
        f"single call = one answer from the default worker; podium loop = rules coordinator "
        f"({'with' if plan else 'without'} a planner), the check as verifier, up to {max_turns} turns."
    )
    click.echo(
        "Sampling is seeded: the loop's first answer is the single call's answer; the difference is what "
        "checking and retrying with the failing test add."
    )
    if pool.name == "embedded":
        click.echo(STAND_IN)
    started = time.perf_counter()
    await single.run("Say OK.", budget=Budget(max_turns=1))  # load the models now, not inside the first row's timing
    click.echo(f"(models loaded and warmed up in {time.perf_counter() - started:.1f}s)")
    click.echo(f"\n{'task':<10} {'question':<44}  {'single call':<20}  podium loop")
    results = []
    try:
        for task in tasks:
            single_out, loop_out = await run_task(task, single, loop, max_turns, on_event=store)
            results.append((task, single_out, loop_out))
            click.echo(row(task, single_out, loop_out))
    finally:
        await single.aclose()
    click.echo("\n".join(["-" * 98, *summary(results)]))
    if pool.name == "embedded":
        click.echo(
            "Each call evaluates its whole prompt (the demo pool's prompt_cache: false: a cached prefix can "
            "change a greedy answer), so both arms pay for every prompt; compare model calls."
        )
    click.echo("\nEvery run is stored: `podium traces ls` lists them, `podium traces show ID --full` shows each turn.")


@click.command()
@pool_option
@click.option(
    "--tasks",
    "tasks_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of tasks (default: the shipped ones; format in podium/data/demo_tasks.yaml).",
)
@click.option(
    "--max-turns",
    type=click.IntRange(2, 20),
    default=6,
    show_default=True,
    help="Turn limit of the loop (check turns included).",
)
@click.option("--plan/--no-plan", default=False, show_default=True, help="Let the loop start with a planner turn.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Run only the first N tasks.")
def demo(pool_ref: str, tasks_file: str | None, max_turns: int, plan: bool, limit: int | None) -> None:
    """Single call vs the podium loop on small tasks whose tests are the verifier.

    \b
    Examples:
      podium demo                          # embedded offline pool (what `make demo` runs)
      podium demo --limit 3 --plan
      podium demo --pool my-pool.yaml --tasks my-tasks.yaml
    """
    asyncio.run(run_demo(pool_ref, tasks_file, max_turns, plan, limit))
