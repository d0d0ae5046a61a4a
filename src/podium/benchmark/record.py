"""``podium bench run --record DIR``: each pool model's graded outcome per task, as a replay dataset.

The rows of the ``fixed:MODEL`` baselines are exactly "model M answered task T once and the check
gave score S at cost C", the replay format's outcome, so ``podium train replay DIR`` trains a head
on the user's own pool with grounded rewards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..pool import Pool
from ..tasks import Task


def split_for(task_id: str) -> str:
    """The replay split of a task: the same crc32 rule as ``podium traces export``."""
    from ..traces.reports import split_of

    return split_of(task_id)


def replay_tables(tasks: list[Task], rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, outcomes) from the single-model rows; tasks without any such row are left out."""
    latest = {(r["task"], r["coordinator"]): r for r in rows if r["coordinator"].startswith("fixed:")}
    outcomes = [
        {
            "item_id": task,
            "model": coord.removeprefix("fixed:"),
            "score": float(r["score"]),
            "cost_usd": float(r["cost_usd"]),
            "output_chars": int(r.get("output_chars", 0)),
        }
        for (task, coord), r in sorted(latest.items())
    ]
    seen = {o["item_id"] for o in outcomes}
    items = [
        {"item_id": t.id, "task": t.family, "split": split_for(t.id), "text": t.prompt} for t in tasks if t.id in seen
    ]
    return items, outcomes


def write_record(
    out_dir: Path, tasks: list[Task], rows: list[dict[str, Any]], pool: Pool, source: str
) -> dict[str, int]:
    """Write the replay dataset; returns counts. ``models.json`` carries the pool's prices."""
    from ..learned.replay import write_replay

    items, outcomes = replay_tables(tasks, rows)
    models = sorted({o["model"] for o in outcomes})
    prices = {
        m: {
            "input_usd_per_mtok": pool.get(m).input_usd_per_mtok,
            "output_usd_per_mtok": pool.get(m).output_usd_per_mtok,
        }
        for m in models
        if m in pool.models
    }
    meta = {
        "source": source,
        "score_source": "graded",
        "pool": pool.name,
        "note": "score = the task's check on the model's single answer (fixed:MODEL baseline runs)",
    }
    write_replay(out_dir, items, outcomes, prices=prices, meta=meta)
    return {"items": len(items), "outcomes": len(outcomes), "models": len(models)}
