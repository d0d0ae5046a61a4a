"""How often the float32 logits of the tied-head rewards would choose differently from the float64
ones, and how many rows the margin check sends to the exact logits (``podium/learned/tied.py``).

Usage: PYTHONPATH=src python bench/bench_float32_choices.py [DATASET_DIR] [--generations 60]
Trains eval replay's heads on one shared set (single mode at λ = 0 and 1, cascade mode at λ = 0.3
with the realistic verifier, 3 turns), and at every reward evaluation compares three choices per
(candidate head, item): the float64 argmax (the reference), the plain float32 argmax, and the
verified choice that training uses. Writes bench/results/replay_eval_float32_choices.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from podium.learned import tied
from podium.learned.parallel_eval import blas_threads
from podium.learned.replay import load_replay
from podium.learned.rewards import pick_untried, untried_logits
from podium.learned.train import TrainConfig, prepare, train_head

ROOT = Path(__file__).resolve().parent.parent
COUNTS: dict[str, dict[str, int]] = {}


def count(kind: str, **values: int) -> None:
    row = COUNTS.setdefault(kind, {})
    for key, value in values.items():
        row[key] = row.get(key, 0) + value


def exact_logits(thetas: np.ndarray, parts: tied.TiedParts) -> np.ndarray:
    n, m = parts.ridge_z.shape
    out = np.empty((len(thetas), n, m))
    tied.tied_block(out, np.empty_like(out), thetas, parts, slice(0, n))
    return out


def checked_choice(original: Any) -> Any:
    def choice(thetas: np.ndarray, parts: tied.TiedParts, approx: np.ndarray | None = None) -> np.ndarray:
        approx32 = np.empty((len(thetas), *parts.ridge_z.shape), np.float32) if approx is None else approx
        got = original(thetas, parts, approx32)
        want = np.argmax(exact_logits(thetas, parts), axis=2)
        slack = (2.0 * tied.margin(thetas, parts))[:, None, None]
        near = (approx32 >= approx32.max(axis=2, keepdims=True) - slack).sum(axis=2) > 1
        count(
            "first turn",
            choices=int(want.size),
            float32_differs=int((np.argmax(approx32, axis=2) != want).sum()),
            recomputed=int(near.sum()),
            verified_differs=int((got != want).sum()),
        )
        return got

    return choice


def checked_pick(original: Any) -> Any:
    def pick(self: tied.UntriedPick, flat: np.ndarray, penalty: np.ndarray, tried: list[np.ndarray]) -> np.ndarray:
        got = original(self, flat, penalty, tried)
        n = len(self.parts.ridge_z)
        exact = tied.exact_rows(self.thetas, self.parts, flat // n, flat % n)
        want = pick_untried(exact, np.arange(len(flat)), penalty, tried)
        naive = np.argmax(untried_logits(self.approx, flat, penalty, tried), axis=1)
        count(
            "later turns",
            choices=len(flat),
            float32_differs=int((naive != want).sum()),
            verified_differs=int((got != want).sum()),
        )
        return np.asarray(got)

    return pick


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", nargs="?", default=str(ROOT.parent / "shared/data/routing/llmrouter_9model"))
    ap.add_argument("--generations", type=int, default=60)
    args = ap.parse_args()
    tied.tied_choice = checked_choice(tied.tied_choice)  # type: ignore[assignment]
    tied.UntriedPick.__call__ = checked_pick(tied.UntriedPick.__call__)  # type: ignore[method-assign]
    ds = load_replay(args.dataset)
    base = TrainConfig(seed=0, generations=args.generations)
    prep = prepare(ds, base)
    heads = [("single", 0.0, 0.0, 0.0), ("single", 1.0, 0.0, 0.0), ("cascade", 0.3, 0.2, 0.1)]
    with blas_threads():
        for mode, lam, fa, fr in heads:
            train_head(prep, replace(base, mode=mode, lam=lam, verifier_fa=fa, verifier_fr=fr), progress=None)
            print(mode, lam, json.dumps(COUNTS), flush=True)
    load = os.getloadavg()
    out = {"dataset": ds.name, "generations": args.generations, "heads": heads, "counts": COUNTS, "load": load}
    path = ROOT / "bench" / "results" / "replay_eval_float32_choices.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{'':<12} {'choices':>12} {'float32 differs':>16} {'recomputed':>11} {'verified differs':>17}")
    for kind, row in COUNTS.items():
        print(
            f"{kind:<12} {row['choices']:>12} {row['float32_differs']:>16} {row.get('recomputed', '-')!s:>11} "
            f"{row['verified_differs']:>17}"
        )
    sys.exit(1 if any(row["verified_differs"] for row in COUNTS.values()) else 0)


if __name__ == "__main__":
    main()
