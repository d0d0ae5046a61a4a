"""How much of ``podium serve``'s CPU per pass-through request goes to the garbage collector, before
and after a change, in the same rounds.

Runs bench/bench_server.py's stub and ``podium serve`` (traces stored, 50 clients) for this tree's
source and for ``--before-src`` (e.g. a ``git archive`` of an earlier commit's ``src/``), each with
bench/gc_probe loaded: every collection's thread CPU time is summed per generation. Each round
measures both servers (order alternating); reported per request: CPU of the whole process, CPU in
collections by generation, and collections. Writes bench/results/server_gc.{json,md}.

    python bench/bench_server_gc.py --before-src /tmp/before/src [--rounds 5] [--requests 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

PROBE = Path(__file__).resolve().parent / "gc_probe"


def snapshot(pid: int, probe: Path) -> dict:
    """The probe's totals now (it appends a line on SIGUSR1)."""
    lines = probe.read_text().splitlines() if probe.exists() else []
    os.kill(pid, signal.SIGUSR1)
    for _ in range(500):
        now = probe.read_text().splitlines() if probe.exists() else []
        if len(now) > len(lines):
            return json.loads(now[-1])
        time.sleep(0.01)
    raise SystemExit(f"the GC probe of process {pid} did not answer: is bench/gc_probe on its PYTHONPATH?")


def start(paths: dict[str, Path], work: Path, label: str, src: str | None) -> tuple:
    probe = work / f"gc-{label}.jsonl"
    path = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
    proc, url = bs.start_podium(
        paths, work, "full", src=src, extra_env={"PODIUM_GC_PROBE": str(probe), "PYTHONPATH": path}
    )
    return proc, url, probe


def one(label: str, proc, url: str, probe: Path, requests: int) -> dict:
    bs.asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, 20, 100))  # warm
    before = snapshot(proc.pid, probe)
    row = bs.asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, 50, requests))
    after = snapshot(proc.pid, probe)
    n = max(1, row["ok"])
    out = {"target": label, "ok": row["ok"], "rps": row["rps"]}
    out["cpu_ms"] = 1000 * (after["process_cpu_s"] - before["process_cpu_s"]) / n
    out["gc_ms"] = [1000 * (a - b) / n for a, b in zip(after["gc_cpu_s"], before["gc_cpu_s"])]
    out["collections_per_1k"] = [1000 * (a - b) / n for a, b in zip(after["collections"], before["collections"])]
    out["frozen"] = after["frozen"]
    print(
        f"  {label:<10} {row['rps']:>7.1f} req/s  cpu {out['cpu_ms']:.3f} ms/req  gc "
        + " / ".join(f"{g:.3f}" for g in out["gc_ms"])
        + f" ms/req (gen 0/1/2)  frozen {out['frozen']}",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-src", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", default=str(bs.RESULTS / "server_gc.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="podium-gc-"))
    stub_port = bs.free_port()
    stub = bs.spawn([sys.executable, bs.__file__, "--stub", str(stub_port)], dict(os.environ), work / "stub.log")
    servers = {}
    load_start = bs.uptime()
    try:
        bs.wait_up(f"http://127.0.0.1:{stub_port}/v1/models", stub, 30)
        paths = bs.write_configs(work, f"http://127.0.0.1:{stub_port}/v1")
        servers["after"] = start(paths, work, "after", None)
        servers["before"] = start(paths, work, "before", args.before_src)
        rows = []
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", flush=True)
            for label in ["after", "before"] if i % 2 == 0 else ["before", "after"]:
                rows.append({"round": i, **one(label, *servers[label], args.requests)})
    finally:
        for proc, _, _ in servers.values():
            bs.stop(proc)
        bs.stop(stub)
    report(rows, args, load_start, bs.uptime())


def report(rows: list[dict], args: argparse.Namespace, load_start: str, load_end: str) -> None:
    def stat(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"

    lines = [
        "# Garbage collection in `podium serve` (pass-through, traces stored, 50 clients)",
        "",
        f"`python bench/bench_server_gc.py --before-src {args.before_src} --rounds {args.rounds} "
        f"--requests {args.requests}`. Load at start: `{load_start}`; at end: `{load_end}`.",
        "Per request, median (min–max) over rounds; both servers measured in every round.",
        "",
        "| server | CPU ms/req | GC gen 0 ms | GC gen 1 ms | GC gen 2 ms | GC total ms | collections /1k req (0/1/2) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label in ("before", "after"):
        mine = [r for r in rows if r["target"] == label]
        gens = [stat([r["gc_ms"][g] for r in mine]) for g in range(3)]
        counts = "/".join(f"{statistics.median(r['collections_per_1k'][g] for r in mine):.0f}" for g in range(3))
        total = stat([sum(r["gc_ms"]) for r in mine])
        lines.append(f"| {label} | {stat([r['cpu_ms'] for r in mine])} | {' | '.join(gens)} | {total} | {counts} |")
    pairs = [
        a["cpu_ms"] / b["cpu_ms"]
        for a in rows
        if a["target"] == "after"
        for b in rows
        if b["target"] == "before" and b["round"] == a["round"]
    ]
    lines += ["", f"CPU per request, after / before in the same round: {stat(pairs)}"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps({"rows": rows, "load_start": load_start, "load_end": load_end}, indent=1))
    out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
