"""CPU time of one CMA-ES generation's rewards: the chunked tied-head code against the whole-array
code it replaced (the reference in ``tests/learned/test_tied_rewards_exact.py``), same inputs, same run.

Usage: PYTHONPATH=src python bench/bench_tied_rewards.py [--repeats 20]
Shapes are eval replay's (population, fit rows, models) on the shared sets; the inputs are
synthetic, and every call's result is checked bit for bit against the reference before timing.
Writes bench/results/tied_rewards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "learned"))

from test_tied_rewards_exact import reference_rollout, reference_tied_parts

from podium.learned.parallel_eval import keep_freed_memory
from podium.learned.rewards import Problem, cascade_rollout
from podium.learned.tied import TiedParts, tied_cascade_rewards, tied_single_rewards

CASES = (  # (name, mode, population, fit rows, models)
    ("mmlu_pro single", "single", 14, 6696, 29),
    ("mmlu_pro cascade", "cascade", 24, 6696, 29),
    ("llmrouter_9model single", "single", 11, 4486, 9),
    ("llmrouter_9model cascade", "cascade", 17, 4486, 9),
)


def make(rng: np.random.Generator, n_pop: int, n: int, m: int, mode: str) -> tuple[Any, ...]:
    n_knn, k = 3, 64
    z = np.hstack([rng.normal(size=(n, k)), np.ones((n, 1)), rng.random((n, n_knn * m))]).astype(np.float32)
    scores = np.round(rng.random((n, m)), 1)
    p = Problem(z, scores, rng.random((n, m)) < 0.97, rng.random((n, m)) * 2, rng.random((n, m)) < 0.5)
    ridge = rng.normal(size=(k + 1, m)) * 0.05
    thetas = rng.normal(size=(n_pop, 1 + n_knn + m + (m * m if mode == "cascade" else 0))) * 0.2
    return p, ridge, n_knn, thetas


def cpu_ms(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        for _ in range(repeats):
            fn()
        best = min(best, (time.process_time() - t) / repeats * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    keep_freed_memory()  # as in eval replay's workers
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'case':<26} {'before ms':>10} {'after ms':>9} {'ratio':>6}   (CPU per generation, best of 3)")
    for name, mode, n_pop, n, m in CASES:
        p, ridge, n_knn, thetas = make(rng, n_pop, n, m, mode)
        parts = TiedParts.of(p, ridge, n_knn)

        def new() -> np.ndarray:
            if mode == "single":
                return tied_single_rewards(thetas, parts, p, 0.3)
            return tied_cascade_rewards(thetas, parts, p, 0.3, 3)

        knn = np.ascontiguousarray(p.z[:, 65:].reshape(n, n_knn, m).transpose(1, 0, 2))
        ridge_z = p.z[:, :65] @ ridge  # both computed once per problem, as the old code cached them

        def old() -> np.ndarray:
            return reference_tied_parts(thetas, p, ridge_z, knn, 0.3, mode)

        assert np.array_equal(new(), old()), name
        before, after = cpu_ms(old, args.repeats), cpu_ms(new, args.repeats)
        rows.append({"case": name, "population": n_pop, "rows": n, "models": m, "before_ms": before, "after_ms": after})
        print(f"{name:<26} {before:>10.2f} {after:>9.2f} {after / before:>6.2f}")
    base = rng.normal(size=(24, 6696, 29))
    w_fail = rng.normal(size=(24, 29, 29))
    p, *_ = make(rng, 24, 6696, 29, "cascade")
    before = cpu_ms(lambda: reference_rollout(base, w_fail, p, 3), args.repeats)
    after = cpu_ms(lambda: cascade_rollout(base, w_fail, p, 3), args.repeats)
    rows.append({"case": "rollout only (24, 6696, 29)", "before_ms": before, "after_ms": after})
    print(f"{'rollout only (24,6696,29)':<26} {before:>10.2f} {after:>9.2f} {after / before:>6.2f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out = ROOT / "bench" / "results" / "tied_rewards.json"
    out.write_text(json.dumps({"load_average": load, "repeats": args.repeats, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
