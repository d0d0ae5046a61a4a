"""The event loop's own CPU per pass-through request of ``podium serve`` (its main thread, read from
/proc), for this tree and, with ``--before-src``, an earlier one, interleaved round by round.

The event loop's thread is the server's bottleneck at 50 clients (docs/performance.md), so its CPU
per request is the figure a change to the hot path must move; the process total (trace writer's
child and threads included) and the requests/s are reported beside it.

    python bench/bench_server_loop.py [--rounds 4] [--requests 15000] [--before-src DIR] [--name NAME]

Writes bench/results/server_loop[_NAME].json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_server as bs
from profile_server_spy import thread_cpu

FIELDS = ("loop_ms_per_request", "process_ms_per_request", "rps")


def measure(
    paths: dict[str, Path], work: Path, src: str | None, requests: int, traces: str = "full"
) -> dict[str, float]:
    proc, url = bs.start_podium(paths, work, traces, src=src)
    try:
        asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, 50, 2000))  # warm-up
        cpu, loop = bs.cpu_seconds(proc.pid), thread_cpu(proc.pid)
        row = asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, 50, requests))
        cpu, loop = bs.cpu_seconds(proc.pid) - cpu, thread_cpu(proc.pid) - loop
    finally:
        bs.stop(proc)
    if row["ok"] != requests:
        raise SystemExit(f"error: {requests - row['ok']} requests failed: {row['errors']}")
    ok = row["ok"]
    return {"loop_ms_per_request": 1000 * loop / ok, "process_ms_per_request": 1000 * cpu / ok, "rps": row["rps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=15000)
    parser.add_argument("--before-src", default=None, help="an earlier tree's src/ (git archive)")
    parser.add_argument("--traces-off", action="store_true", help="also this tree with PODIUM_TRACES=off")
    parser.add_argument("--name", default="", help="results go to server_loop_NAME.*")
    args = parser.parse_args()
    trees: dict[str, str | None] = {"this tree": None}
    if args.before_src:
        trees["before"] = str(Path(args.before_src).resolve())
    if args.traces_off:
        trees["this tree, traces off"] = None
    work = Path(tempfile.mkdtemp(prefix="podium-loop-"))
    port = bs.free_port()
    stub = bs.spawn([sys.executable, bs.__file__, "--stub", str(port)], dict(os.environ), work / "stub.log")
    load, rounds = [bs.uptime()], []
    try:
        stub_url = f"http://127.0.0.1:{port}/v1"
        bs.wait_up(f"{stub_url}/models", stub, 60)
        paths = bs.write_configs(work, stub_url)
        started = time.monotonic()
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))  # alternate who goes first
            rounds.append(
                {
                    name: measure(paths, work, trees[name], args.requests, "off" if "traces off" in name else "full")
                    for name in order
                }
            )
            eta = (time.monotonic() - started) / (r + 1) * (args.rounds - r - 1)
            print(f"round {r + 1}/{args.rounds}: {json.dumps(rounds[-1])}; ETA {eta:.0f} s", file=sys.stderr)
    finally:
        bs.stop(stub)
    load.append(bs.uptime())
    report = {"config": vars(args), "load": load, "rounds": rounds, "summary": summarize(rounds, list(trees))}
    text = table(report)
    print(text)
    stem = "server_loop" + (f"_{args.name}" if args.name else "")
    (bs.RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (bs.RESULTS / f"{stem}.md").write_text(text)
    print(f"wrote bench/results/{stem}.md and .json")


def summarize(rounds: list[dict], trees: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    out = {tree: {f: bs.spread3([rnd[tree][f] for rnd in rounds]) for f in FIELDS} for tree in trees}
    for other in trees[1:]:
        out[f"this tree × {other} (same round)"] = {
            f: bs.spread3([rnd["this tree"][f] / rnd[other][f] for rnd in rounds]) for f in FIELDS
        }
    return out


def table(report: dict) -> str:
    lines = [
        *bs.load_lines(report["load"]),
        f"`podium serve` pass-through, traces full unless said, 50 clients, {report['config']['requests']} requests a "
        f"round, {report['config']['rounds']} rounds; median (min–max).",
        "",
        "| tree | event loop CPU ms/request | process CPU ms/request | req/s |",
        "|---|---:|---:|---:|",
    ]
    for tree, fields in report["summary"].items():
        cells = [f"{fields[f]['median']} ({fields[f]['min']}–{fields[f]['max']})" for f in FIELDS]
        lines.append(f"| {tree} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
