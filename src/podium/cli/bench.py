"""``podium bench run`` and ``podium bench report``: live benchmarks on task sets with executable checks."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import ConfigError, UsageError
from .options import pool_option

T = TypeVar("T")

SETTINGS = "bench.json"
# settings that change what a result means: resuming with other values would mix results
PINNED = ("tasks", "pool", "grounded", "budget", "call_max_tokens", "seed")  # --limit may grow: samples nest


@click.group()
def bench() -> None:
    """Benchmark coordinators and single models on tasks with executable checks.

    \b
    Examples:
      podium bench run tasks.jsonl --pool embedded --coordinators rules,fixed --out results/ --limit 20
      podium bench report results/
    """


def _settings(out: Path, current: dict[str, Any]) -> None:
    """Write OUT/bench.json, or check that a resumed run uses the same settings."""
    path = out / SETTINGS
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [k for k in PINNED if before.get(k) != current.get(k)]
        if changed:
            raise UsageError(
                f"{path}: results in {out} were made with other settings ({', '.join(changed)}); "
                "use another --out or the same options"
            )
        current = {
            **current,
            "coordinators": list(dict.fromkeys([*before.get("coordinators", []), *current["coordinators"]])),
        }
    out.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SETTINGS}.{os.getpid()}")  # shards share OUT: never let one read a half-written file
    partial.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(partial, path)


def _command_line() -> str:
    """This invocation as a shell line (for the record in bench.json)."""
    args = sys.argv[1:]
    args = args[2:] if args[:2] == ["bench", "run"] else args
    return "podium bench run " + " ".join(shlex.quote(a) for a in args)


def _store() -> Any:
    from ..traces.store import Store, traces_setting

    if traces_setting() == "off":
        return None
    try:
        return Store.open()
    except (sqlite3.Error, ConfigError) as exc:
        click.echo(f"warning: traces not stored ({exc})", err=True)
        return None


def _finish(out: Path, rows: list[dict[str, Any]], names: list[str], meta: dict[str, Any], with_plot: bool) -> None:
    from ..benchmark import build_report, markdown, write_report

    report = build_report(rows, names, meta)
    try:
        written = write_report(report, out, with_plot=with_plot)
    except UsageError as exc:  # matplotlib missing: the table and JSON still count
        click.echo(f"warning: no plot ({exc})", err=True)
        written = write_report(report, out, with_plot=False)
    click.echo(markdown(report))
    click.echo("wrote " + ", ".join(str(p) for p in written))


@bench.command("run")
@click.argument("tasks_path", metavar="TASKS", type=click.Path(dir_okay=False, path_type=Path))
@pool_option
@click.option(
    "--coordinators",
    default="rules",
    show_default=True,
    help="Comma-separated coordinators (rules, prompted, learned:PATH, ...); fixed:MODEL baselines for every pool model are added.",
)
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Results folder (resumable)."
)
@click.option(
    "--grounded/--no-grounded", default=True, show_default=True, help="Use the task's check as the runs' verifier."
)
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=1, show_default=True, help="Runs in flight at once."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Run a seeded sample of N tasks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option(
    "--max-turns", type=click.IntRange(1, 100), default=None, help="Turn limit per run (default: the pool's budget)."
)
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Token budget per run.")
@click.option(
    "--deadline", type=click.FloatRange(0, min_open=True), default=None, help="Wall-clock budget per run in seconds."
)
@click.option("--call-max-tokens", type=click.IntRange(1), default=None, help="Cap every model's max_tokens per call.")
@click.option("--no-baselines", is_flag=True, help="Do not add fixed:MODEL for every pool model.")
@click.option(
    "--record",
    "record",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the single-model outcomes as a replay dataset (for podium train replay).",
)
@click.option("--no-plot", is_flag=True, help="Skip the cost/accuracy PNG.")
@click.option(
    "--shard",
    default=None,
    metavar="K/N",
    help="Run only the sampled tasks with index mod N == K (split one --out over processes).",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    default=None,
    help="Run the items on a Ray cluster: local, auto, HOST:PORT or ray://HOST:PORT (the ray extra).",
)
def run_cmd(
    tasks_path: Path,
    pool_ref: str,
    coordinators: str,
    out: Path,
    grounded: bool,
    concurrency: int,
    limit: int | None,
    seed: int,
    max_turns: int | None,
    max_tokens: int | None,
    deadline: float | None,
    call_max_tokens: int | None,
    no_baselines: bool,
    record: Path | None,
    no_plot: bool,
    shard: str | None,
    quiet: bool,
    ray_address: str | None,
) -> None:
    """Run every task of TASKS (JSONL: GSM8K, MBPP, HumanEval or podium records) through every coordinator.

    Every single model of the pool is added as a `fixed:MODEL` baseline; graded items are not re-run
    when OUT already holds them (resume). See docs/bench.md.

    \b
    Examples:
      podium bench run mbpp.jsonl --pool embedded --coordinators rules --out mbpp/ --limit 200 --seed 0
      podium bench run gsm8k.jsonl.gz --pool my-pool.yaml --coordinators rules,conductor --concurrency 4 --out g/
      podium bench run my-tasks.jsonl --pool my-pool.yaml --out r/ --record replay/   # then: podium train replay replay/
    """
    from ..benchmark.runner import stderr_progress
    from ..pool import load_pool
    from ..tasks import load_tasks

    tasks = load_tasks(tasks_path, limit=limit, seed=seed)
    pool = load_pool(pool_ref)
    limits = {"max_turns": max_turns, "max_tokens": max_tokens, "deadline_s": deadline}
    config = _config(pool, coordinators.split(","), grounded, concurrency, limits, call_max_tokens, not no_baselines)
    runner = _runner(pool, config, out)
    settings = _run_settings(tasks_path, pool_ref, config, limit, seed, runner.names, len(tasks))
    _settings(out, settings)
    _execute(runner, _shard(tasks, shard), ray_address, None if quiet else stderr_progress)
    meta = {**settings, "title": f"{tasks_path.name}: {len(tasks)} items, pool {pool.name}"}
    rows = _report(out, tasks, runner, meta, plot=not no_plot)
    if record:
        _write_record(record, tasks, rows, runner, tasks_path)


def _config(
    pool: Any,
    coordinators: list[str],
    grounded: bool,
    concurrency: int,
    limits: dict[str, Any],
    call_max_tokens: int | None,
    add_baselines: bool,
) -> Any:
    """The bench configuration; its budget is the pool's with the limits given on the command line."""
    from ..benchmark import BenchConfig
    from ..types import Budget

    budget = Budget.model_validate(
        {**pool.config.budget.model_dump(), **{k: v for k, v in limits.items() if v is not None}}
    )
    return BenchConfig(
        coordinators=coordinators,
        grounded=grounded,
        concurrency=concurrency,
        budget=budget,
        call_max_tokens=call_max_tokens,
        add_baselines=add_baselines,
    )


def _run_settings(
    tasks_path: Path, pool_ref: str, config: Any, limit: int | None, seed: int, names: list[str], items: int
) -> dict[str, Any]:
    """What the run was asked to do, as written to OUT's settings file and the report's header."""
    return {
        "tasks": str(tasks_path),
        "pool": pool_ref,
        "grounded": config.grounded,
        "budget": config.budget.model_dump(),
        "call_max_tokens": config.call_max_tokens,
        "limit": limit,
        "seed": seed,
        "coordinators": names,
        "items": items,
        "command": _command_line(),
    }


def _report(out: Path, tasks: list[Any], runner: Any, meta: dict[str, Any], *, plot: bool) -> list[dict[str, Any]]:
    """Summarize the results of these tasks and coordinators in ``out`` (other shards' rows too); returns the rows."""
    from ..benchmark import load_results

    ids, names = {t.id for t in tasks}, set(runner.names)
    rows = [r for r in load_results(out) if r["task"] in ids and r["coordinator"] in names]
    _finish(out, rows, runner.names, meta, plot)
    return rows


def _runner(pool: Any, config: Any, out: Path) -> Any:
    """The bench runner, storing its runs' traces when the trace store is on."""
    from ..benchmark import BenchRunner

    store = _store()
    handler = (
        store.handler(source="bench", on_error=lambda e: click.echo(f"warning: trace not stored: {e}", err=True))
        if store
        else None
    )
    return BenchRunner(pool, config, out, on_event=handler, store=store)


def _execute(runner: Any, tasks: list[Any], ray_address: str | None, progress: Any) -> None:
    """Run ``tasks`` through ``runner``, here or on a Ray cluster."""
    if ray_address:
        from ..benchmark.distributed import run_on_ray

        asyncio.run(run_on_ray(runner, tasks, ray_address, progress))
    else:
        asyncio.run(runner.run(tasks, progress=progress))


def _write_record(record: Path, tasks: list[Any], rows: list[Any], runner: Any, tasks_path: Path) -> None:
    """Write the single-model outcomes as a replay dataset (``--record``)."""
    from ..benchmark.record import write_record

    counts = write_record(record, tasks, rows, runner.pool, source=f"podium bench run {tasks_path.name}")
    click.echo(
        f"wrote {record}: {counts['items']} items, {counts['outcomes']} graded outcomes over {counts['models']} models; "
        f"train a head with: podium train replay {record} --out head.npz"
    )


def _shard(tasks: list[T], shard: str | None) -> list[T]:
    """The tasks of shard ``K/N`` (every N-th, from index K); all tasks without one."""
    if not shard:
        return tasks
    k, sep, n = shard.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise UsageError(f"--shard {shard}: expected K/N with 0 <= K < N, e.g. --shard 0/2")
    return tasks[int(k) :: int(n)]


@bench.command("report")
@click.argument("out", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-plot", is_flag=True, help="Skip the cost/accuracy PNG.")
def report_cmd(out: Path, no_plot: bool) -> None:
    """Rebuild the report of a results folder (also while a benchmark is still running).

    \b
    Examples:
      podium bench report results/ --no-plot
    """
    from ..benchmark import load_results

    path = out / SETTINGS
    if not path.is_file():
        raise UsageError(f"{path}: not found; OUT must be a folder written by podium bench run")
    settings = json.loads(path.read_text())
    rows = load_results(out)
    names = settings.get("coordinators") or sorted({r["coordinator"] for r in rows})
    _finish(
        out, rows, names, {**settings, "title": f"{Path(settings['tasks']).name}, pool {settings['pool']}"}, not no_plot
    )
