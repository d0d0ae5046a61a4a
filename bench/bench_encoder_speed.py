"""Encoding speed of the LM encoders' numpy forward passes: this tree vs a baseline commit, same run.

The baseline's ``encoders_minilm.py`` / ``encoders_smollm2.py`` are taken from git (``--baseline``,
default 9a9418c: before the float32 / fused-GEMM rewrite) into a temporary package, and both
versions encode the same mmlu_pro texts (most are cut at the 64-token cap) interleaved in two
rounds, on one BLAS thread. Reports texts per CPU-second (batched, as the cache warm-up runs) and
the median CPU milliseconds of one text alone (the decision path), with the ratio new / old and the
agreement of the vectors (minimum cosine).

    OPENBLAS_NUM_THREADS=1 python bench/bench_encoder_speed.py [--n 128] [--encoders minilm,smollm2]

Writes bench/results/encoders_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from podium.learned.encoders import get_encoder
from podium.learned.replay import load_replay

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SPECS: dict[str, dict[str, Any]] = {"minilm": {"max_tokens": 64}, "smollm2": {"layers": 8, "max_tokens": 64}}
CLASSES = {"minilm": "MiniLMEncoder", "smollm2": "SmolLM2Encoder"}


def baseline_module(name: str, rev: str, folder: Path) -> Any:
    """``encoders_{name}.py`` at ``rev``, importable on its own (relative imports made absolute)."""
    src = subprocess.run(
        ["git", "show", f"{rev}:src/podium/learned/encoders_{name}.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    for old, new in (("from ..", "from podium."), ("from .encoders", "from podium.learned.encoders")):
        src = src.replace(old, new)
    src = "\n".join(line for line in src.splitlines() if not line.startswith("register_encoder("))
    (folder / f"old_encoders_{name}.py").write_text(src)
    return importlib.import_module(f"old_encoders_{name}")


def measure(encoders: dict[str, Any], texts: list[str]) -> dict[str, dict[str, float]]:
    """Texts per CPU-second and one-text CPU ms p50 per version, interleaved in two rounds."""
    cpu = {k: 0.0 for k in encoders}
    one: dict[str, list[float]] = {k: [] for k in encoders}
    for e in encoders.values():
        e.encode(texts[:4])  # weights loaded, caches filled
    for rnd in range(2):
        for k, e in encoders.items():
            c = time.process_time()
            e.encode(texts[rnd::2])
            cpu[k] += time.process_time() - c
            for text in texts[rnd * 10 : rnd * 10 + 10]:
                c = time.process_time()
                e.encode([text])
                one[k].append(time.process_time() - c)
    return {
        k: {
            "texts_per_cpu_s": round(len(texts) / cpu[k], 1),
            "one_text_cpu_ms_p50": round(1e3 * float(np.median(one[k])), 1),
        }
        for k in encoders
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--baseline", default="9a9418c")
    parser.add_argument("--encoders", default="minilm,smollm2")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "routing" / "mmlu_pro"))
    a = parser.parse_args()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    out: dict[str, Any] = {
        "command": "python bench/bench_encoder_speed.py " + " ".join(sys.argv[1:]),
        "uptime_start": uptime(),
    }
    texts = load_replay(a.dataset).texts[: a.n]
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        for name in a.encoders.split(","):
            old = getattr(baseline_module(name, a.baseline, Path(tmp)), CLASSES[name])(**SPECS[name])
            new = get_encoder({"name": name, **SPECS[name]})
            res = measure({"baseline": old, "new": new}, texts)
            cos = float((old.encode(texts[:32]) * new.encode(texts[:32])).sum(1).min())
            out[name] = {**res, "min_cosine_new_vs_baseline": round(cos, 7)}
            print(name, json.dumps(out[name]), flush=True)
    out["uptime_end"] = uptime()
    lines = [
        "# LM encoders' numpy forward passes: this tree vs the baseline commit (same run, interleaved)",
        "",
        f"Command: `OPENBLAS_NUM_THREADS=1 {out['command']}` (baseline {a.baseline}; {a.n} mmlu_pro texts, 64-token cap)  ",
        f"Load: `{out['uptime_start']}` (start), `{out['uptime_end']}` (end); 2 cores shared with other jobs.",
        "",
        "| encoder | texts / CPU-s baseline | new | ratio | one text, CPU ms p50 baseline | new | ratio | min cosine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in a.encoders.split(","):
        r = out[name]
        b, n = r["baseline"], r["new"]
        lines.append(
            f"| {name} | {b['texts_per_cpu_s']} | {n['texts_per_cpu_s']} | {n['texts_per_cpu_s'] / b['texts_per_cpu_s']:.2f}x | "
            f"{b['one_text_cpu_ms_p50']} | {n['one_text_cpu_ms_p50']} | "
            f"{b['one_text_cpu_ms_p50'] / n['one_text_cpu_ms_p50']:.2f}x faster | {r['min_cosine_new_vs_baseline']} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoders_speed.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "encoders_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
