"""Wall and CPU time of ``podium eval replay`` on the four shared sets, cold, against an earlier tree.

Each round runs the same command twice, once per tree, in alternating order (``before`` first in odd
rounds), each in a fresh ``PODIUM_HOME`` (so the embedding cache is cold) with default ``--jobs``.
Every output is compared with the committed ``bench/results/replay_eval.json`` by
``bench/replay_diff.py`` (every non-timing number identical). The ratio after / before is taken
within each round, so a load change between rounds does not enter it.

    python bench/bench_replay_wall.py --before-src DIR [--rounds 3]

``DIR`` is another tree's ``src/`` (``git archive COMMIT src | tar -x -C /tmp/old``). Writes
``bench/results/replay_wall.json`` and ``.md`` (``--name`` another name).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SHARED = ROOT.parent / "shared" / "data" / "routing"
SETS = ("mmlu_pro", "routerdc_7x7b", "routerbench_subset", "llmrouter_9model")
ARGS = ["--turns", "3", "--seed", "0", "--false-accept", "0.2", "--false-reject", "0.1", "--folds", "5", "--quiet"]


class RunFailed(Exception):
    """A run exited non-zero (session 7's code could die of an embedding-cache race, fixed in session 8)."""


def run_retried(src: str, out: Path, failures: list[str], tries: int = 3) -> dict[str, Any]:
    """:func:`run_once`, run again after a failure (each failure recorded); the last failure stops the benchmark."""
    for attempt in range(tries):
        try:
            return run_once(src, out)
        except RunFailed as exc:
            failures.append(str(exc))
            print(f"{exc} (attempt {attempt + 1} of {tries})", flush=True)
    raise SystemExit(failures[-1])


def run_once(src: str, out: Path) -> dict[str, Any]:
    """One cold ``eval replay`` with ``src`` first on the path: wall, CPU (all child processes), numbers."""
    with tempfile.TemporaryDirectory(prefix="replay-wall-") as home:
        env = {**os.environ, "PODIUM_HOME": home, "PYTHONPATH": src}
        sets = [os.path.relpath(SHARED / s, ROOT) for s in SETS]  # as replay_eval.json recorded them
        cmd = [sys.executable, "-m", "podium", "eval", "replay", *sets, *ARGS]
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([*cmd, "--json-out", str(out)], env=env, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RunFailed(f"eval replay failed ({src}): {proc.stderr.strip().splitlines()[-1:]}")
    diff = subprocess.run(
        [sys.executable, str(HERE / "replay_diff.py"), str(RESULTS / "replay_eval.json"), str(out)],
        capture_output=True,
        text=True,
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_1m": load, "identical": diff.returncode == 0}


def spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", required=True, help="an earlier tree's src/ (git archive)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="replay_wall", help="results file name under bench/results/")
    args = parser.parse_args()
    if not (Path(args.before_src) / "podium" / "learned").is_dir():
        parser.error(f"--before-src {args.before_src}: no podium/learned there (give a tree's src/)")
    missing = [s for s in SETS if not (SHARED / s).is_dir()]
    if missing:
        parser.error(f"shared sets missing under {SHARED}: {', '.join(missing)}")
    trees = {"before": str(Path(args.before_src).resolve()), "after": str(ROOT / "src")}
    rounds: list[dict[str, Any]] = []
    failures: dict[str, list[str]] = {"before": [], "after": []}
    started = time.perf_counter()
    total = 2 * args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
                row[label] = run_retried(trees[label], Path(tmp) / f"{label}{r}.json", failures[label])
                done = 2 * r + len(row)
                eta = (time.perf_counter() - started) / done * (total - done)
                print(f"round {r + 1}/{args.rounds} {label}: {row[label]}  ETA {eta / 60:.1f} min", flush=True)
            row["wall_ratio"] = round(row["after"]["wall_s"] / row["before"]["wall_s"], 3)
            row["cpu_ratio"] = round(row["after"]["cpu_s"] / row["before"]["cpu_s"], 3)
            rounds.append(row)
    report = summarise(args, rounds)
    report["failed_runs"] = failures  # not in the rounds: each was run again
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(table(report))
    print(table(report))


def summarise(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "command": "podium eval replay " + " ".join([*SETS, *ARGS]) + " (fresh PODIUM_HOME, default --jobs)",
        "before_src": args.before_src,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": len(os.sched_getaffinity(0)),
        "rounds": rounds,
        "summary": {
            label: {
                "wall_s": spread([r[label]["wall_s"] for r in rounds]),
                "cpu_s": spread([r[label]["cpu_s"] for r in rounds]),
                "identical_every_round": all(r[label]["identical"] for r in rounds),
            }
            for label in ("before", "after")
        }
        | {
            "wall_ratio": spread([r["wall_ratio"] for r in rounds]),
            "cpu_ratio": spread([r["cpu_ratio"] for r in rounds]),
            "load_1m": spread([r[k]["load_1m"] for r in rounds for k in ("before", "after")]),
        },
    }


def table(report: dict[str, Any]) -> str:
    s = report["summary"]

    def fmt(d: dict[str, float]) -> str:
        return f"{d['median']:.1f} ({d['min']:.1f}–{d['max']:.1f})"

    lines = [
        f"# eval replay, four shared sets, cold ({report['when']}, {report['cores']} cores)",
        "",
        "| tree | wall s, median (min–max) | CPU s | every number identical |",
        "|---|---|---|---|",
    ]
    for label in ("before", "after"):
        lines.append(
            f"| {label} | {fmt(s[label]['wall_s'])} | {fmt(s[label]['cpu_s'])} | {s[label]['identical_every_round']} |"
        )
    ratio, cpu = s["wall_ratio"], s["cpu_ratio"]
    lines += [
        "",
        f"after / before, paired per round: wall {ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f}), "
        f"CPU {cpu['median']:.3f} ({cpu['min']:.3f}–{cpu['max']:.3f}); 1-minute load at the starts "
        f"{s['load_1m']['min']:.2f}–{s['load_1m']['max']:.2f}. Target: after ≤ 120 s wall.",
        "",
        "Runs that failed and were run again: "
        + ("; ".join(f"{k}: {len(v)} ({v[0]})" for k, v in report.get("failed_runs", {}).items() if v) or "none"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
