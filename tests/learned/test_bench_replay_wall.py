"""bench/bench_replay_wall.py: ratios within each round, a bad tree is an error, the table says which."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load():
    spec = importlib.util.spec_from_file_location("bench_replay_wall", BENCH / "bench_replay_wall.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_a_tree_without_podium_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_replay_wall.py"), "--before-src", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no podium/learned there" in proc.stderr


def test_ratios_are_paired_within_rounds() -> None:
    bench = _load()

    def side(wall: float, cpu: float, identical: bool = True) -> dict:
        return {"wall_s": wall, "cpu_s": cpu, "load_1m": 1.0, "identical": identical}

    # the load doubles in round 2: both trees slow down, the paired ratio does not move
    rounds = [
        {"before": side(160, 280), "after": side(120, 210), "wall_ratio": 0.75, "cpu_ratio": 0.75},
        {"before": side(320, 560), "after": side(240, 420, identical=False), "wall_ratio": 0.75, "cpu_ratio": 0.75},
    ]
    report = bench.summarise(argparse.Namespace(before_src="/old/src"), rounds)
    s = report["summary"]
    assert s["wall_ratio"] == {"min": 0.75, "median": 0.75, "max": 0.75}
    assert s["after"]["wall_s"] == {"min": 120, "median": 180.0, "max": 240}
    assert s["before"]["identical_every_round"] and not s["after"]["identical_every_round"]
    table = bench.table(report)
    assert "| after | 180.0 (120.0–240.0) | 315.0 (210.0–420.0) | False |" in table
    assert "failed and were run again: none" in table
    report["failed_runs"] = {"before": ["eval replay failed (old): BadZipFile"], "after": []}
    assert "run again: before: 1 (eval replay failed (old): BadZipFile)" in bench.table(report)
