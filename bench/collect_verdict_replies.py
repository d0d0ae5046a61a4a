"""Collect real verifier replies from the embedded SmolLM2-135M model, and measure the grammar.

Verifier prompts are built from GSM8K and MBPP items (../shared/data/tasks), each with its
reference answer and a corrupted one. Every prompt runs in three settings: the old prompt
("Start your reply with ACCEPT or REVISE"), the new protocol prompt without a grammar, and the new
prompt with the llama.cpp verdict grammar (what podium now sends for verifier turns).

    python bench/collect_verdict_replies.py [--gsm8k 16] [--mbpp 8]

Writes bench/results/verdict_replies_embedded.jsonl (every reply) and
bench/results/verdict_grammar.md/.json (how often each setting produced a protocol line, and time).
Replies were then labelled by hand into tests/data/verdicts.jsonl (source: embedded); the rule is
in docs/checks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import time
from pathlib import Path

from podium.backends.local import LocalBackend
from podium.pool import load_pool
from podium.roles import DEFAULT_PROMPTS
from podium.types import ChatMessage, CompletionRequest

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT.parent / "shared" / "data" / "tasks"
RESULTS = ROOT / "bench" / "results"
OLD_PROMPT = (
    "You check another model's answer. Reply with ACCEPT if the answer is correct and complete, "
    "otherwise REVISE followed by one sentence saying what is wrong. Start your reply with ACCEPT or REVISE."
    "\n\nTask: {query}\n\nAnswer to check:\n{answer}"
)
PROTOCOL = re.compile(r"VERDICT: (ACCEPT|REVISE)\s*$")


def gsm8k_items(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in gzip.open(TASKS / "gsm8k" / "test.jsonl.gz", "rt")]
    out = []
    for row in rng.sample(rows, n):
        final = row["answer"].rsplit("####", 1)[-1].strip()
        wrong = str(int(float(final.replace(",", ""))) + rng.choice([1, 2, 10, -1]))
        out.append((row["question"], f"The answer is {final}.", f"The answer is {wrong}."))
    return out


def mbpp_items(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in open(TASKS / "mbpp" / "mbpp_sanitized_427.jsonl")]
    out = []
    for row in rng.sample(rows, n):
        task = f"{row['text']} Your code should pass: {row['test_list'][0]}"
        broken = re.sub(r"return (.+)", r"return None  # \1", row["code"], count=1)
        out.append((task, f"```python\n{row['code']}\n```", f"```python\n{broken}\n```"))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gsm8k", type=int, default=16)
    parser.add_argument("--mbpp", type=int, default=8)
    args = parser.parse_args()
    rng = random.Random(11)
    items = gsm8k_items(args.gsm8k, rng) + mbpp_items(args.mbpp, rng)
    backend = LocalBackend(load_pool("embedded").get("smollm2-precise"))
    settings = {
        "old-prompt": (OLD_PROMPT, None),
        "protocol-prompt": (DEFAULT_PROMPTS["verifier"], None),
        "protocol+grammar": (DEFAULT_PROMPTS["verifier"], "verdict"),
    }
    replies, stats = [], {name: {"n": 0, "protocol_line": 0, "seconds": 0.0} for name in settings}
    total, done, started = len(items) * 2 * len(settings), 0, time.perf_counter()
    for query, right, wrong in items:
        for answer, correct in ((right, True), (wrong, False)):
            for name, (template, structured) in settings.items():
                prompt = template.format(query=query, answer=answer)
                t = time.perf_counter()
                completion = await backend.complete(
                    CompletionRequest(
                        messages=[ChatMessage(role="user", content=prompt)], max_tokens=160, structured=structured
                    )
                )
                stats[name]["seconds"] += time.perf_counter() - t
                stats[name]["n"] += 1
                stats[name]["protocol_line"] += bool(PROTOCOL.search(completion.text.strip()))
                replies.append({"setting": name, "answer_correct": correct, "text": completion.text})
                done += 1
                eta = (time.perf_counter() - started) / done * (total - done)
                print(f"\r{done}/{total} ETA {eta:5.0f}s", end="", flush=True)
    print()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "verdict_replies_embedded.jsonl", "w") as fh:
        for r in replies:
            fh.write(json.dumps(r) + "\n")
    report = {
        "model": "SmolLM2-135M-Instruct (embedded pool, smollm2-precise)",
        "items": len(items),
        "load": os.getloadavg(),
        "settings": stats,
    }
    (RESULTS / "verdict_grammar.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| setting | replies | with a final VERDICT line | s per reply |", "|---|---:|---:|---:|"]
    lines += [
        f"| {k} | {v['n']} | {v['protocol_line']} ({v['protocol_line'] / max(v['n'], 1):.0%}) | {v['seconds'] / max(v['n'], 1):.2f} |"
        for k, v in stats.items()
    ]
    md = (
        "# Verifier replies of the embedded model: protocol compliance\n\n"
        + "\n".join(lines)
        + f"\n\nMachine load: {report['load'][0]:.2f}\n"
    )
    (RESULTS / "verdict_grammar.md").write_text(md)
    print(md)


if __name__ == "__main__":
    asyncio.run(main())
