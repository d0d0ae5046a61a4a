"""Encoders compared as routers' representation: hashed vs MiniLM vs SmolLM2 hidden states (TRINITY).

Same datasets, same fixed subsample, same head and training budget, same seed; only the encoder
changes. Every router is fitted on the subsample's train rows (hyperparameters and the safe gate
by K-fold CV inside train) and scored once on its test rows, with 95% paired bootstrap intervals
of the gap closed (best single → oracle). Encoding is slow for the LM encoders on 2 shared cores,
so the sets are subsampled (fixed seed) and the encodings go to the on-disk cache first.

Usage (niced; BLAS on one thread, which is much faster than two contended ones here):
    OPENBLAS_NUM_THREADS=1 PODIUM_HOME=/tmp/x nice -n 10 python bench/bench_encoders.py warm smollm2 DATASET...
    OPENBLAS_NUM_THREADS=1 PODIUM_HOME=/tmp/x nice -n 10 python bench/bench_encoders.py eval DATASET...
``warm ENCODER`` only fills the cache (run one per encoder in parallel, progress with ETA on stderr);
``eval`` runs the comparison (warming whatever is missing) and writes bench/results/encoders_subsample.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from podium.learned import evaluate as ev
from podium.learned.encoders import EmbeddingCache, get_encoder, text_key
from podium.learned.evaluate import evaluate_dataset
from podium.learned.replay import ReplayDataset, load_replay
from podium.learned.stats import paired_interval
from podium.learned.train import TrainConfig

ENCODERS: dict[str, dict[str, Any]] = {
    "hashed": {"name": "hashed"},
    "minilm": {"name": "minilm", "max_tokens": 64},
    "smollm2": {"name": "smollm2", "layers": 8, "max_tokens": 64},
}
SET_ORDER = ["llmrouter_9model", "routerdc_7x7b", "mmlu_pro", "routerbench_subset"]
ROWS = ("best_single", "per_task", "mf", "knn", "predictor", "learned_ungated", "learned", "learned@cap", "oracle")


def subsample(ds: ReplayDataset, n_train: int, n_test: int, seed: int) -> ReplayDataset:
    """A fixed random subset: ``n_train`` train rows and ``n_test`` test rows (eval_only dropped)."""
    rng = np.random.default_rng(seed)
    # a seeded permutation's prefix: a smaller subsample is a subset of a larger one (cached encodings carry over)
    rows = np.sort(
        np.concatenate([rng.permutation(ds.indices(s))[:n] for s, n in (("train", n_train), ("test", n_test))])
    )
    return dataclasses.replace(
        ds,
        item_ids=ds.item_ids[rows],
        tasks=ds.tasks[rows],
        splits=ds.splits[rows],
        texts=[ds.texts[i] for i in rows],
        scores=ds.scores[rows],
        costs=ds.costs[rows],
    )


def warm(name: str, texts: list[str], chunk: int = 32) -> dict[str, float]:
    """Encode ``texts`` into the on-disk cache in chunks with progress and ETA; items/s of the fresh ones."""
    cache = EmbeddingCache(get_encoder(ENCODERS[name]))
    index = cache._load()
    todo = [t for t in dict.fromkeys(texts) if text_key(t) not in index]
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(todo), chunk):
        cache.encode(todo[i : i + chunk])
        done = min(i + chunk, len(todo))
        rate = done / (time.perf_counter() - start)
        print(
            f"  {name}: {done}/{len(todo)} encoded, {rate:.2f} items/s, ETA {(len(todo) - done) / rate:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "fresh": len(todo),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "items_per_s": round(len(todo) / wall, 2) if todo else None,
        "items_per_cpu_s": round(len(todo) / cpu, 2) if todo and cpu > 0 else None,
    }


def evaluate(ds: ReplayDataset, name: str, folds: int, latency_items: int = 10) -> dict[str, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    with capture_item_scores() as per_item:
        res = evaluate_dataset(
            ds,
            TrainConfig(encoder=ENCODERS[name]),
            progress=None,
            extras=False,
            folds=folds,
            latency_items=latency_items,
        )
    methods = {
        m["method"]: m for m in (dataclasses.asdict(x) if not isinstance(x, dict) else x for x in res["methods"])
    }
    return {
        "methods": {
            k: {f: methods[k][f] for f in ("score", "score_ci", "gap_closed", "gap_ci", "latency_ms")}
            for k in ROWS
            if k in methods
        },
        "cv": res["cv"]["learned"],
        "seconds": res["seconds"],
        "cpu_s": round(time.process_time() - cpu, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "_items": {k: per_item[k] for k in ("best_single", "knn", "learned_ungated", "learned") if k in per_item},
        "oracle": methods["oracle"]["score"],
        "test_items": res["test_items"],
    }


@contextlib.contextmanager
def capture_item_scores() -> Iterator[dict[str, np.ndarray]]:
    """The per-item test scores of each method of the first (test) table ``evaluate_dataset`` builds,
    for paired intervals between encoders (the eval_only table, built later, is not kept)."""
    seen: dict[str, np.ndarray] = {}
    original = ev.Table.add

    def add(self: ev.Table, method: str, scores: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.setdefault(method, np.asarray(scores, dtype=np.float64).copy())
        return original(self, method, scores, *args, **kwargs)

    ev.Table.add = add  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        ev.Table.add = original  # type: ignore[method-assign]


def versus_hashed(rows: list[dict[str, Any]]) -> None:
    """Each encoder's gap closed minus the hashed encoder's on the same set, per method, with a 95% paired
    bootstrap interval over the test items (``row["vs_hashed"]``)."""
    hashed = {r["dataset"]: r for r in rows if r["encoder"] == "hashed"}
    for row in rows:
        base = hashed.get(row["dataset"])
        if base is None or row["encoder"] == "hashed" or "_items" not in base or "_items" not in row:
            continue
        span = row["oracle"] - float(np.mean(base["_items"]["best_single"]))
        row["vs_hashed"] = {}
        for k in ("knn", "learned_ungated", "learned"):
            diff = row["_items"][k] - base["_items"][k]
            lo, hi = paired_interval(row["_items"][k], base["_items"][k], seed=0)
            row["vs_hashed"][k] = {
                "gap_diff": float(diff.mean() / span) if span > 0 else 0.0,
                "gap_diff_ci": [lo / span, hi / span] if span > 0 else [0.0, 0.0],
            }


def uncached(name: str, texts: list[str]) -> int:
    """How many of ``texts`` the on-disk cache of encoder ``name`` lacks."""
    index = EmbeddingCache(get_encoder(ENCODERS[name]))._load()
    return sum(text_key(t) not in index for t in dict.fromkeys(texts))


def encode_one_cpu_ms(name: str, texts: list[str]) -> float:
    """Median CPU milliseconds to encode one text (no cache: the encoder itself), after one warm-up call."""
    encoder = get_encoder(ENCODERS[name])
    encoder.encode(texts[:1])
    times = []
    for text in texts:
        cpu = time.process_time()
        encoder.encode([text])
        times.append(time.process_time() - cpu)
    return round(1000 * float(np.median(times)), 2)


def fmt_diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "—"
    lo, hi = d["gap_diff_ci"]
    return f"{d['gap_diff'] * 100:+.1f} pts [{lo * 100:+.0f}, {hi * 100:+.0f}]"


def report_full(out: dict[str, Any]) -> str:
    """The full-set table: gap closed per method and encoder, and each LM encoder minus hashed (paired)."""
    lines = [
        "# Encoders as the router's representation on the full shared sets: hashed vs MiniLM (vs SmolLM2)",
        "",
        f"Command: `{out['command']}`  ",
        f"Machine load: `{out['uptime_start']}` (start), `{out['uptime_end']}` (end); 2 cores shared with "
        "other jobs.  ",
        "Full sets, the shared split (train / test as in `podium eval replay`); same head, training budget, "
        f"folds ({out.get('folds', 5)}) and seed for every encoder; selection by CV inside train, test scored once. "
        "Encodings read from the on-disk cache (filled beforehand by `warm --full`: cold encoding times below).",
        "",
        "Encoders: " + "; ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in ENCODERS.items()),
        "",
        "Gap closed (best single → oracle) on test, 95% paired bootstrap intervals; `vs hashed`: the router's gap "
        "closed minus the same router's on the hashed encoder, in points, paired over the same test items:",
        "",
        "| set | test items | encoder | knn | learned (ungated) | learned (safe) | knn vs hashed | ungated vs hashed "
        "| safe vs hashed "
        "| decision p50 ms (wall) | encode one text, CPU ms p50 | eval s (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in out["results"]:
        m, vs = row["methods"], row.get("vs_hashed", {})
        lines.append(
            f"| {row['dataset']} | {row.get('test_items', '')} | {row['encoder']} | {fmt_gap(m['knn'])} | "
            f"{fmt_gap(m['learned_ungated'])} | {fmt_gap(m['learned'])} | {fmt_diff(vs.get('knn'))} | "
            f"{fmt_diff(vs.get('learned_ungated'))} | {fmt_diff(vs.get('learned'))} | {m['learned']['latency_ms']:.1f} | {row['encode_one_cpu_ms_p50']:.1f} | "
            f"{row['wall_s']:.0f} / {row['cpu_s']:.0f} |"
        )
    lines += ["", "Safe head's CV choice per row:", ""]
    lines += [f"- {r['dataset']} / {r['encoder']}: {r['cv']['reason']}" for r in out["results"]]
    lines += [
        "",
        "Times: cold = encoding the whole set into the on-disk cache (`warm --full`, nice 19 while other jobs ran; "
        "wall and CPU seconds below); warm = the `eval s` column (the evaluation with every encoding cached; "
        "`encode one text` is the encoder's own cost per decision, `decision p50` the whole decision in wall time).",
        "",
    ]
    lines += [f"- cold: {c}" for c in out.get("cold", [])]
    lines += [f"- encoded during eval: {k}: {json.dumps(w)}" for k, w in out["warm"].items() if w["fresh"]]
    return "\n".join(lines) + "\n"


def fmt_gap(m: dict[str, Any]) -> str:
    lo, hi = m["gap_ci"]
    return f"{m['gap_closed'] * 100:+.1f}% [{lo * 100:+.0f}, {hi * 100:+.0f}]"


def report(out: dict[str, Any]) -> str:
    lines = [
        "# Encoders as the router's representation: hashed vs MiniLM vs SmolLM2 hidden states",
        "",
        f"Command: `{out['command']}`  ",
        f"Machine load: `{out['uptime_start']}` (start), `{out['uptime_end']}` (end); 2 shared cores.  ",
        f"Fixed subsample per set (seed {out['seed']}): {out['n_train']} train / {out['n_test']} test items "
        "(full sets were too slow to encode with the LM encoders here). Same head, training budget, folds and seed "
        "for every encoder; selection by CV inside train, test scored once.",
        "",
        "Encoders: " + "; ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in ENCODERS.items()),
        "",
        "Gap closed (best single → oracle) on test, with the 95% paired bootstrap interval:",
        "",
        "| set | encoder | knn | predictor | learned (ungated) | learned (safe) | safe head's CV choice | decision p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in out["results"]:
        m = row["methods"]
        lines.append(
            f"| {row['dataset']} | {row['encoder']} | {fmt_gap(m['knn'])} | {fmt_gap(m['predictor'])} | "
            f"{fmt_gap(m['learned_ungated'])} | {fmt_gap(m['learned'])} | {row['cv']['reason']} | "
            f"{m['learned']['latency_ms']:.1f} |"
        )
    lines += ["", "Mean gap closed over the sets (point estimates; every interval above is wide):", ""]
    for name in ENCODERS:
        rows = [r["methods"] for r in out["results"] if r["encoder"] == name]
        if rows:
            mean = {
                k: 100 * float(np.mean([m[k]["gap_closed"] for m in rows]))
                for k in ("knn", "predictor", "learned_ungated", "learned")
            }
            lines.append(f"- {name} ({len(rows)} sets): " + ", ".join(f"{k} {v:+.1f}%" for k, v in mean.items()))
    lines += [
        "",
        "Reference rows (same subsample): best single score, per-task best, MF, oracle.",
        "",
        "| set | best single | per_task gap | mf gap | oracle |",
        "|---|---|---|---|---|",
    ]
    for row in out["results"]:
        if row["encoder"] != "hashed":
            continue
        m = row["methods"]
        lines.append(
            f"| {row['dataset']} | {m['best_single']['score']:.3f} | {fmt_gap(m['per_task'])} | "
            f"{fmt_gap(m['mf'])} | {m['oracle']['score']:.3f} |"
        )
    lines += [
        "",
        "Encoding throughput (fresh items only; niced, on the loaded machine, in parallel with other jobs):",
        "",
    ]
    for key, w in out["warm"].items():
        lines.append(f"- {key}: {json.dumps(w)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["warm", "eval", "merge", "report"])
    parser.add_argument("args", nargs="+", help="warm: ENCODER DATASET...; eval: DATASET...")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="the whole sets, not the --train/--test subsample")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--out", default="bench/results/encoders_subsample")
    parser.add_argument("--warm-logs", nargs="*", default=[], help="merge: stderr logs of the warm runs")
    parser.add_argument("--merge", action="store_true", help="add to the rows already in --out (other sets)")
    a = parser.parse_args()
    if a.what == "merge":  # per-set runs (run in parallel) into one table: ARGS are their .json files
        parts = [json.loads(Path(p).read_text()) for p in a.args]
        out = {**parts[0], "command": " ; ".join(p["command"] for p in parts), "results": [], "warm": {}}
        out["uptime_end"] = parts[-1]["uptime_end"]
        for p in parts:
            out["results"] += p["results"]
            out["warm"].update({k: v for k, v in p["warm"].items() if v["fresh"]})
        for log in a.warm_logs:  # the `warm` runs' summary lines: "[set] encoder: {...}"
            for line in Path(log).read_text().splitlines():
                if line.startswith("["):
                    key, _, stats = line.partition(": ")
                    out["warm"][key.replace("] ", "/").lstrip("[")] = json.loads(stats)
        Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
        Path(a.out + ".md").write_text(report(out))
        print(report(out))
        return
    if a.what == "report":  # the tables again from a results .json (ARGS: its path), plus cold encoding runs
        out = json.loads(Path(a.args[0]).read_text())
        for log in a.warm_logs:  # `warm --full` summary lines: "[set] encoder: {...}"
            cold = [line for line in Path(log).read_text().splitlines() if line.startswith("[")]
            out["cold"] = sorted(set(out.get("cold", [])) | set(cold))
        out["results"].sort(key=lambda r: (SET_ORDER.index(r["dataset"]), list(ENCODERS).index(r["encoder"])))
        Path(a.args[0]).write_text(json.dumps(out, indent=1, default=float))
        text = report_full(out) if out.get("full") else report(out)
        Path(a.out + ".md").write_text(text)
        print(text)
        return
    if a.what == "warm":
        name, paths = a.args[0], a.args[1:]
        for path in paths:
            ds = load_replay(path) if a.full else subsample(load_replay(path), a.train, a.test, a.seed)
            stats = warm(name, ds.texts, chunk=256 if a.full else 32)
            print(f"[{ds.name}] {name}: {json.dumps(stats)}", file=sys.stderr, flush=True)
        return
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    out: dict[str, Any] = {
        "command": " ".join(["python bench/bench_encoders.py", *sys.argv[1:]]),
        "uptime_start": uptime(),
        "seed": a.seed,
        "n_train": a.train,
        "n_test": a.test,
        "results": [],
        "warm": {},
    }
    previous = Path(a.out + ".json")
    if a.merge and previous.is_file():  # runs on other sets, same settings: one table
        old = json.loads(previous.read_text())
        out["command"] = old["command"] + " ; " + out["command"]
        out["uptime_start"] = old["uptime_start"]
        out["results"], out["warm"] = old["results"], old["warm"]
    out["full"] = a.full
    for path in a.args:
        ds = load_replay(path) if a.full else subsample(load_replay(path), a.train, a.test, a.seed)
        for name in a.encoders.split(","):
            missing = uncached(name, ds.texts)
            if a.full and name != "hashed" and missing:  # never a second encoding process: `warm --full` fills it
                print(f"{ds.name:<20} {name:<8} skipped: {missing} texts not in the cache yet", flush=True)
                continue
            out["warm"][f"{ds.name}/{name}"] = warm(name, ds.texts)
            row = {"dataset": ds.name, "encoder": name, **evaluate(ds, name, a.folds, 30 if a.full else 10)}
            row["encode_one_cpu_ms_p50"] = encode_one_cpu_ms(name, [ds.texts[i] for i in ds.indices("test")[:30]])
            out["results"].append(row)
            m = row["methods"]
            print(
                f"{ds.name:<20} {name:<8} knn {fmt_gap(m['knn'])} learned_ungated {fmt_gap(m['learned_ungated'])} "
                f"learned {fmt_gap(m['learned'])} | {row['cv']['reason']}",
                flush=True,
            )
    out["uptime_end"] = uptime()
    latest = {(r["dataset"], r["encoder"]): r for r in out["results"]}  # a set run again replaces its rows
    out["results"] = list(latest.values())
    versus_hashed(out["results"])
    for row in out["results"]:
        row.pop("_items", None)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
    text = report_full(out) if a.full else report(out)
    Path(a.out + ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
