"""Scaling out: what Redis, PostgreSQL, extra workers and Ray cost or buy, each against its peer.

1. Trace writes per second: PostgreSQL vs SQLite (same 3-turn runs, one writer thread).
2. The cost Redis adds per request: `podium serve` with a keys file, shared state in Redis vs in
   process (sequential requests to a scripted model; mean and p50 latency, 95% interval of the mean).
3. Throughput of `podium serve --workers 1` vs `--workers 2` (concurrent clients, requests/s).
4. Bench items per minute: `podium bench run` in one process vs `--ray` on a local Ray head.

Real servers on 127.0.0.1 (tests/local_servers.py starts Redis and PostgreSQL). Load matters on a
shared machine: `uptime` is recorded before and after.

    PYTHONPATH=src python bench/bench_scale.py [--quick]

Writes bench/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "bench")]

from bench_fakes import code_tasks, write_code_pool  # noqa: I001
from bench_store import sample_run
from local_servers import PostgresServer, RedisServer, free_port
from podium.server.auth import hash_key
from podium.traces.store import Store

RESULTS = ROOT / "bench" / "results"
POOL = ROOT / "tests" / "pools" / "server.yaml"
KEY = {"Authorization": "Bearer sk-bench"}
ASK = {"model": "eu-solver", "messages": [{"role": "user", "content": "What is 17 * 23?"}]}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% interval (normal approximation)."""
    m = statistics.fmean(xs)
    return m, 1.96 * statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0


def trace_writes(pg: PostgresServer, n: int) -> dict[str, Any]:
    runs = [sample_run(i) for i in range(n)]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, where in (("sqlite", str(Path(tmp) / "t.db")), ("postgres", pg.fresh_schema())):
            store = Store.open(where)
            store.record(runs[0])  # connection and migrations out of the timing
            started = time.perf_counter()
            for run in runs[1:]:
                store.record(run)
            out[name] = (n - 1) / (time.perf_counter() - started)
    out["ratio_postgres_over_sqlite"] = out["postgres"] / out["sqlite"]
    return out


class Serve:
    """`podium serve` on a free port with a keys file; extra env and args."""

    def __init__(self, home: Path, env: dict[str, str], args: list[str]) -> None:
        home.mkdir(parents=True, exist_ok=True)
        keys = home / "keys.yaml"
        entry = {"name": "bench", "sha256": hash_key("sk-bench"), "rate_limit": {"requests_per_minute": 6e6}}
        keys.write_text(yaml.safe_dump({"keys": [entry]}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "PODIUM_HOME": str(home), "PODIUM_TRACES": "off", "PYTHONPATH": str(ROOT / "src"), **env}
        cmd = [sys.executable, "-m", "podium", "serve", "--pool", str(POOL), "--port", str(self.port)]
        cmd += ["--keys", str(keys), "--log-level", "warning", *args]
        self.log = (home / "serve.log").open("w")
        self.proc = subprocess.Popen(cmd, env=full, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"serve did not start: {(home / 'serve.log').read_text()[-500:]}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def sequential_latency(url: str, n: int) -> list[float]:
    times = []
    with httpx.Client() as client:
        for _ in range(5):  # warm-up
            client.post(f"{url}/v1/chat/completions", json=ASK, headers=KEY, timeout=60)
        for _ in range(n):
            t = time.perf_counter()
            r = client.post(f"{url}/v1/chat/completions", json=ASK, headers=KEY, timeout=60)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    return times


async def throughput(url: str, n: int, clients: int) -> float:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=ASK, headers=KEY) for _ in range(8)))
        sem = asyncio.Semaphore(clients)

        async def one() -> int:
            async with sem:
                r = await client.post(f"{url}/v1/chat/completions", json=ASK, headers=KEY, timeout=120)
                return r.status_code

        started = time.perf_counter()
        codes = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - started
    assert set(codes) == {200}, codes
    return n / elapsed


def redis_cost(redis: RedisServer, tmp: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, env in (("local", {}), ("redis", {"PODIUM_REDIS_URL": redis.url})):
        server = Serve(tmp / f"lat-{name}", env, [])
        try:
            times = sequential_latency(server.url, n)
        finally:
            server.stop()
        m, ci = mean_ci(times)
        out[name] = {"mean_ms": m * 1000, "ci95_ms": ci * 1000, "p50_ms": statistics.median(times) * 1000}
    out["added_ms"] = out["redis"]["mean_ms"] - out["local"]["mean_ms"]
    return out


def workers_throughput(redis: RedisServer, tmp: Path, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in (1, 2):
        server = Serve(tmp / f"w{workers}", {"PODIUM_REDIS_URL": redis.url}, ["--workers", str(workers)])
        try:
            out[f"workers_{workers}_rps"] = asyncio.run(throughput(server.url, n, 16))
        finally:
            server.stop()
    out["ratio_2_over_1"] = out["workers_2_rps"] / out["workers_1_rps"]
    return out


def ray_items(tmp: Path, n_tasks: int) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    pool = write_code_pool(tmp)
    tasks = tmp / "code.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in code_tasks(n_tasks)))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}",
        "PODIUM_HOME": str(tmp),
        "PODIUM_TRACES": "off",
    }
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp / 'ray'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )  # fmt: skip
    out: dict[str, Any] = {}
    try:
        time.sleep(15)
        for name, extra in (("local", []), ("ray", ["--ray", f"127.0.0.1:{port}"])):
            args = ["bench", "run", str(tasks), "--pool", pool, "--coordinators", "rules", "--no-plot", "--quiet"]
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "podium", *args, "--out", str(tmp / name), *extra],
                env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            assert done.returncode == 0, done.stderr[-800:]
            items = len((tmp / name / "results.jsonl").read_text().splitlines())
            out[name] = {"runs": items, "seconds": elapsed, "runs_per_min": items / elapsed * 60}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out["ratio_ray_over_local"] = out["ray"]["runs_per_min"] / out["local"]["runs_per_min"]
    return out


def markdown(r: dict[str, Any]) -> str:
    t, c, w, y = r["trace_writes"], r["redis_cost"], r["workers"], r["ray"]
    return "\n".join(
        [
            "# Scaling out: Redis, PostgreSQL, workers, Ray (bench/bench_scale.py)",
            "",
            f"Load before: `{r['uptime_before']}`  ",
            f"Load after: `{r['uptime_after']}`",
            "",
            "| measure | peer | value | peer value | ratio |",
            "|---|---|---|---|---|",
            f"| trace writes/s, PostgreSQL | SQLite | {t['postgres']:.0f} | {t['sqlite']:.0f} | {t['ratio_postgres_over_sqlite']:.2f} |",
            f"| request latency, Redis state (ms, mean ± 95%) | in-process state | {c['redis']['mean_ms']:.2f} ± {c['redis']['ci95_ms']:.2f} | "
            f"{c['local']['mean_ms']:.2f} ± {c['local']['ci95_ms']:.2f} | +{c['added_ms']:.2f} ms |",
            f"| requests/s, --workers 2 | --workers 1 | {w['workers_2_rps']:.0f} | {w['workers_1_rps']:.0f} | {w['ratio_2_over_1']:.2f} |",
            f"| bench runs/min, --ray (local head, 2 CPUs) | one process | {y['ray']['runs_per_min']:.0f} | {y['local']['runs_per_min']:.0f} | {y['ratio_ray_over_local']:.2f} |",
            "",
            f"Settings: {json.dumps(r['settings'])}. The machine has 2 cores shared with other jobs: the "
            "ratios, not the absolute numbers, are the result; with a loaded machine, extra processes "
            "cannot buy much. Ray times include connecting to the head and starting its workers.",
            "",
            "The shared caches' and spend holds' cost per operation: scale_caches.md (bench/bench_caches.py).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="Smaller samples (a smoke run).")
    a = parser.parse_args()
    s = {
        "writes": 100 if a.quick else 400,
        "latency_n": 50 if a.quick else 200,
        "load_n": 100 if a.quick else 400,
        "tasks": 4 if a.quick else 12,
    }
    result: dict[str, Any] = {"settings": s, "uptime_before": uptime()}
    pg, redis = PostgresServer(), RedisServer()
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            print("[scale] trace writes ...", file=sys.stderr)
            result["trace_writes"] = trace_writes(pg, s["writes"])
            print("[scale] redis cost per request ...", file=sys.stderr)
            result["redis_cost"] = redis_cost(redis, tmp, s["latency_n"])
            print("[scale] workers 1 vs 2 ...", file=sys.stderr)
            result["workers"] = workers_throughput(redis, tmp, s["load_n"])
            print("[scale] bench local vs ray ...", file=sys.stderr)
            result["ray"] = ray_items(tmp / "ray-bench", s["tasks"])
    finally:
        pg.stop()
        redis.stop()
    result["uptime_after"] = uptime()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
