"""The scripted-specialist benchmark still shows what it claims: the conductor's plan beats every
single model and every fixed topology (a small run of bench/bench_conductor.py's first part)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_conductor
import specialists


def test_specialist_checks_and_answers() -> None:
    task = specialists.make_tasks(1, seed=3)[0]
    assert specialists.check(f"work...\nFINAL: {task.answer}", task.answer)
    assert not specialists.check("FINAL: 1|2", task.answer) and not specialists.check(None, task.answer)
    assert bench_conductor.last_number("so 1,234.0 apples") == "1234"


async def test_conductor_beats_every_single_model_and_topology() -> None:
    part = await bench_conductor.scripted_part(40)
    rows = part["approaches"]
    assert set(rows) == set(bench_conductor.SCRIPTED_APPROACHES)
    best_other = max(r["accuracy"] for name, r in rows.items() if name != "conductor")
    assert rows["conductor"]["accuracy"] > best_other + 0.2
    assert all(r["conductor_minus_this_ci95"][0] > 0 for name, r in rows.items() if name != "conductor")
    assert rows["conductor"]["plan_origins"] == ["conductor plan by conductor"]
