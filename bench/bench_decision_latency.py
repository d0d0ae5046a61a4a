"""Decision latency of the learned coordinator on this CPU, encoder included.

Each decision gets a fresh ~256-token query (no encoding cache hit) and a transcript of two earlier
turns (a worker answer rejected by a verifier), and goes through ``LearnedCoordinator.decide``:
hash-encode the text, project, read the logits, mask, pick role and model. The head is trained
(briefly: latency does not depend on how well it is trained) on a replay dataset, by default the
largest pool (mmlu_pro, 29 models).

Peers in the same run: the ``rules`` coordinator (no model at all) and a kNN router over the same
encodings (encode + cosine against every train item). Ratios are learned / peer.

    python bench/bench_decision_latency.py [--dataset ../shared/data/routing/mmlu_pro] [--n 1000]

Writes bench/results/decision_latency.json. With ``--encoders hashed,minilm,smollm2`` it times the
whole decision per encoder instead (heads trained on a small subsample; wall and CPU time), into
bench/results/encoders_decision_latency.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from podium.coordinators.base import RunState
from podium.coordinators.learned import LearnedCoordinator
from podium.coordinators.rules import RulesCoordinator
from podium.learned.baselines import knn_predict
from podium.learned.encoders import get_encoder
from podium.learned.head import Gate
from podium.learned.knob import attach_knob
from podium.learned.replay import load_replay
from podium.learned.train import TrainConfig, prepare, train_head
from podium.pool import ModelSpec, Pool, PoolConfig
from podium.types import Budget, Role, Turn, Verdict

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "of",
    "a",
    "model",
    "answer",
    "proof",
    "integral",
    "matrix",
    "law",
    "market",
    "protein",
    "energy",
    "velocity",
    "theorem",
    "court",
]


def transcript_text(rng: np.random.Generator, tokens: int = 256) -> str:
    """A fresh text of about ``tokens`` tokens (4 characters each)."""
    out, size = [], 0
    while size < tokens * 4:
        word = str(rng.choice(WORDS)) + str(rng.integers(0, 1000))
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def pool_for(models: list[str]) -> Pool:
    """A scripted pool whose models carry the head's model names."""
    return Pool(PoolConfig(name="bench", models=[ModelSpec(name=m, backend="scripted") for m in models]))


def state_for(pool: Pool, query: str, models: list[str]) -> RunState:
    turns = [
        Turn(turn=1, role=Role.WORKER, model=models[0], output="42"),
        Turn(turn=2, role=Role.VERIFIER, model=models[1], output="REVISE: wrong", verdict=Verdict.REVISE),
    ]
    return RunState(query=query, pool=pool, budget=Budget(max_turns=6), turns=turns)


def percentiles(times: list[float]) -> dict:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


async def time_one(coordinator, pool: Pool, text: str, models: list[str]) -> float:
    state = state_for(pool, text, models)
    t = time.perf_counter()
    await coordinator.decide(state)
    return time.perf_counter() - t


def knn_decider(encoder, train_emb: np.ndarray, scores: np.ndarray, known: np.ndarray):
    """The kNN peer: encode, cosine against every train item, pick the best model (same text input)."""

    def decide(text: str) -> float:
        t = time.perf_counter()
        int(np.argmax(knn_predict(train_emb, scores, known, encoder.encode([text]), 50)))
        return time.perf_counter() - t

    return decide


async def interleaved(coordinators: dict, knn, pool: Pool, texts: list[str], models: list[str]) -> dict[str, list]:
    """Every text goes to every contender, in an order rotated per text, so that a change of the
    machine's load hits them alike (timing them in separate blocks let a load change flip a ratio)."""
    names = [*coordinators, "knn"]
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, text in enumerate(texts):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if name == "knn":
                times[name].append(knn(text))
            else:
                times[name].append(await time_one(coordinators[name], pool, text, models))
    return times


def encoder_coordinator(ds, spec: dict, name: str) -> LearnedCoordinator:
    """A briefly trained safe-path head on ``ds`` with encoder ``spec``, loaded as the coordinator."""
    config = TrainConfig(generations=5, encoder=spec)
    prep = prepare(ds, config)
    head = train_head(prep, config, progress=None)
    order = np.argsort(-np.nanmean(np.where(ds.known[prep.train_rows], ds.scores[prep.train_rows], np.nan), axis=0))
    head.gate = Gate(order, 0.05)
    attach_knob(head, prep, np.ones(len(head.models)))
    path = head.save(RESULTS / f"latency_head_{name}.npz")
    coordinator = LearnedCoordinator.load(path)
    path.unlink()
    return coordinator


def encoders_run(args: argparse.Namespace) -> None:
    """Whole-decision latency per encoder, interleaved per text (wall and CPU time of ``decide``).

    Heads are trained on a small fixed subsample (latency does not depend on how well a head is
    trained, and the LM encoders would otherwise encode the whole set first)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_encoders import ENCODERS, subsample

    ds = subsample(load_replay(args.dataset), args.train_items, 20, 0)
    names = args.encoders.split(",")
    coordinators = {name: encoder_coordinator(ds, ENCODERS[name], name) for name in names}
    pool, models = pool_for(ds.models), list(ds.models)
    rng = np.random.default_rng(0)
    texts = [transcript_text(rng) for _ in range(args.n + 5)]
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for i, text in enumerate(texts):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            state = state_for(pool, text, models)
            w, c = time.perf_counter(), time.process_time()
            loop_decide(coordinators[name], state)
            if i >= 5:  # the first few warm the caches
                wall[name].append(time.perf_counter() - w)
                cpu[name].append(time.process_time() - c)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = {n: {"wall": percentiles(wall[n]), "cpu": percentiles(cpu[n]), "encoder": ENCODERS[n]} for n in names}
    result = {
        "command": "python bench/bench_decision_latency.py " + " ".join(sys.argv[1:]),
        "dataset": ds.name,
        "models": len(models),
        "decisions": args.n,
        "transcript_tokens": 256,
        "target_p50_ms": 20.0,
        "load": uptime,
        "encoders": rows,
    }
    lines = [
        "# Whole-decision latency of the learned coordinator per encoder (one decision at a time)",
        "",
        f"Command: `OPENBLAS_NUM_THREADS=1 {result['command']}`; {args.n} decisions, fresh ~256-token transcripts, "
        f"{ds.name} pool ({len(models)} models), interleaved per text; load at the end: `{uptime}` (2 shared cores).",
        "",
        "| encoder | wall p50 ms | wall p99 ms | CPU p50 ms | CPU p99 ms | CPU p50 / 20 ms target |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} | {r['wall']['p50_ms']:.1f} | {r['wall']['p99_ms']:.1f} | {r['cpu']['p50_ms']:.1f} | "
            f"{r['cpu']['p99_ms']:.1f} | {r['cpu']['p50_ms'] / 20:.2f}x |"
        )
    print("\n".join(lines))
    (RESULTS / "encoders_decision_latency.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "encoders_decision_latency.md").write_text("\n".join(lines) + "\n")


LOOP = asyncio.new_event_loop()


def loop_decide(coordinator: LearnedCoordinator, state: RunState) -> None:
    LOOP.run_until_complete(coordinator.decide(state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "routing" / "mmlu_pro"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--encoders", help="e.g. hashed,minilm,smollm2: whole-decision latency per encoder instead")
    parser.add_argument("--train-items", type=int, default=150, help="with --encoders: train items of the heads")
    args = parser.parse_args()
    if args.encoders:
        encoders_run(args)
        return
    ds = load_replay(args.dataset)
    config = TrainConfig(generations=5)
    prep = prepare(ds, config)
    head = train_head(prep, config, progress=None)
    # the safe head's decision path: a finite gate margin (logits compared with the fallback's) and the knob table
    order = np.argsort(-np.nanmean(np.where(ds.known[prep.train_rows], ds.scores[prep.train_rows], np.nan), axis=0))
    head.gate = Gate(order, 0.05)
    attach_knob(head, prep, np.ones(len(head.models)))
    path = head.save(RESULTS / "latency_head.npz")
    coordinator = LearnedCoordinator.load(path)
    pool = pool_for(head.models)
    rng = np.random.default_rng(0)
    texts = [transcript_text(rng) for _ in range(args.n + 50)]
    encoder, train = get_encoder(head.encoder), prep.train_rows
    knn = knn_decider(encoder, prep.emb[train], ds.scores[train], ds.known[train])
    coordinators = {
        "learned": coordinator,
        "learned@0.5": coordinator.with_cost_weight(0.5),
        "rules": RulesCoordinator(),
    }
    asyncio.run(interleaved(coordinators, knn, pool, texts[:50], head.models))  # warm-up
    times = asyncio.run(interleaved(coordinators, knn, pool, texts[50:], head.models))
    learned, knob, rules, knn_p = (percentiles(times[n]) for n in ("learned", "learned@0.5", "rules", "knn"))
    ratios = np.array(times["learned"]) / np.array(times["knn"])  # paired: same text, same moment
    path.unlink()
    result = {
        "command": "python bench/bench_decision_latency.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "dataset": ds.name,
        "models": len(head.models),
        "encoder": head.encoder,
        "decisions": args.n,
        "transcript_tokens": 256,
        "learned": learned,
        "learned_cost_weight_0.5": knob,
        "rules_peer": rules,
        "knn_peer": knn_p,
        "ratio_learned_over_knn_p50": learned["p50_ms"] / knn_p["p50_ms"],
        "paired_ratio_learned_over_knn": {
            "median": float(np.median(ratios)),
            "p5": float(np.percentile(ratios, 5)),
            "p95": float(np.percentile(ratios, 95)),
        },
        "timing": "interleaved: each text to every contender in a rotated order",
        "target_p50_ms": 20.0,
        "load": {"uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()},
    }
    print(f"{'coordinator':<12} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, r in (("learned", learned), ("learned@0.5", knob), ("rules", rules), ("knn", knn_p)):
        print(f"{name:<12} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['mean_ms']:>8.3f}")
    print(
        f"learned / knn (p50): {result['ratio_learned_over_knn_p50']:.2f}; paired median ratio {np.median(ratios):.2f}"
    )
    print(f"target p50 <= 20 ms; load: {result['load']['uptime']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decision_latency.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
