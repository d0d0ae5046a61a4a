"""``podium train live``: train a learned coordinator head by live rollouts on tasks with checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from .options import pool_option


@click.command("live")
@click.argument("tasks_path", metavar="TASKS", type=click.Path(dir_okay=False, path_type=Path))
@pool_option
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Head file to write (.npz)."
)
@click.option("--generations", type=click.IntRange(0), default=15, show_default=True, help="sep-CMA-ES generations.")
@click.option("--popsize", type=click.IntRange(2), default=8, show_default=True, help="Candidate heads per generation.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Train on a seeded sample of N tasks.")
@click.option("--batch", type=click.IntRange(1), default=None, help="Tasks per generation (default: all).")
@click.option("--lam", type=click.FloatRange(0), default=0.02, show_default=True, help="Reward cost per model call.")
@click.option("--max-turns", type=click.IntRange(1, 100), default=5, show_default=True, help="Turn limit per run.")
@click.option(
    "--grounded/--no-grounded",
    default=False,
    show_default=True,
    help="Also use the task's check as the runs' verifier (default: the pool's verifier, as deployed).",
)
@click.option(
    "--max-calls", type=click.IntRange(1), default=None, help="Paid (uncached) model calls for the whole training."
)
@click.option("--max-cost", type=click.FloatRange(0), default=None, help="USD for the whole training.")
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=8, show_default=True, help="Runs in flight at once."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the optimiser state and response cache here.",
)
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists.")
@click.option(
    "--ray",
    "ray",
    metavar="ADDRESS",
    default=None,
    help="Score each generation's candidates on Ray: local, auto, HOST:PORT or ray://HOST:PORT (extra ray).",
)
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def live(
    tasks_path: Path,
    pool_ref: str,
    out: Path,
    generations: int,
    popsize: int,
    limit: int | None,
    batch: int | None,
    lam: float,
    max_turns: int,
    grounded: bool,
    max_calls: int | None,
    max_cost: float | None,
    concurrency: int,
    seed: int,
    checkpoint: Path | None,
    resume: bool,
    ray: str | None,
    quiet: bool,
) -> None:
    """Train a head on TASKS by running the engine with candidate heads and grading the answers.

    sep-CMA-ES over the head's model and role logits (TRINITY), each candidate scored by live runs
    with grounded rewards; responses are cached, and --max-calls / --max-cost cap the whole training.

    \b
    Examples:
      podium train live tasks.jsonl --pool my-pool.yaml --out head.npz --limit 40 --max-calls 2000
      podium train live tasks.jsonl --pool my-pool.yaml --out head.npz --checkpoint ckpt.pkl --resume
      podium train live tasks.jsonl --pool my-pool.yaml --out head.npz --ray 10.0.0.5:6379
    """
    from .train import _require_train_extra

    _require_train_extra()
    settings = {
        "generations": generations,
        "popsize": popsize,
        "batch": batch,
        "lam": lam,
        "max_turns": max_turns,
        "grounded": grounded,
        "concurrency": concurrency,
        "seed": seed,
        "max_calls": max_calls,
        "max_usd": max_cost,
    }
    _live(tasks_path, pool_ref, out, limit, settings, checkpoint, resume, quiet, ray)


def _live(
    tasks_path: Path,
    pool_ref: str,
    out: Path,
    limit: int | None,
    settings: dict[str, Any],
    checkpoint: Path | None,
    resume: bool,
    quiet: bool,
    ray: str | None = None,
) -> None:
    """``podium train live`` once its options are parsed: train, write the head, print the report."""
    from ..learned.live import LiveConfig, train_live
    from ..learned.train import stderr_progress
    from ..pool import load_pool
    from ..tasks import load_tasks

    tasks = load_tasks(tasks_path, limit=limit, seed=settings["seed"])
    pool = load_pool(pool_ref)
    config = LiveConfig(**settings)
    head, report = asyncio.run(
        train_live(
            pool,
            tasks,
            config,
            checkpoint=checkpoint,
            resume=resume,
            progress=None if quiet else stderr_progress,
            ray=ray,
        )
    )
    path = head.save(out)
    rules, trained = report["baselines"]["rules"], report["trained"]
    click.echo(
        json.dumps(
            {
                "head": str(path),
                "rules": rules,
                "trained": trained,
                "paid_calls": report["paid_calls"],
                "cache_hits": report["cache_hits"],
                "stopped": report["stopped"],
            },
            indent=2,
        )
    )
    click.echo(f"use it with --coordinator learned:{path}", err=True)
