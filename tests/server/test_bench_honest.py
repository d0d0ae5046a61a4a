"""The server and overhead benchmarks cannot flatter: a missing peer stops them, ratios stay within a round."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def bench_server_with(litellm: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``bench_server.py`` run with ``litellm`` as its peer's executable, results to ``out``."""
    command = [sys.executable, str(BENCH / "bench_server.py"), "--litellm", str(litellm), "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ})


def test_missing_litellm_is_an_error_not_a_silent_omission(tmp_path: Path) -> None:
    out = tmp_path / "server.json"
    proc = bench_server_with(tmp_path / "no-litellm", out)
    assert proc.returncode == 2
    assert "LiteLLM proxy not found" in proc.stderr and "--without-peer" in proc.stderr
    assert not out.exists()  # nothing reported


def test_a_litellm_without_its_proxy_extras_is_an_error_that_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "litellm"  # what litellm's CLI does when installed without [proxy]
    fake.write_text('#!/bin/sh\necho "ImportError: backoff is not installed. Please install it" >&2\nexit 1\n')
    fake.chmod(0o755)
    out = tmp_path / "server.json"
    proc = bench_server_with(fake, out)
    assert proc.returncode == 2
    assert "could not start" in proc.stderr and "ImportError: backoff is not installed" in proc.stderr
    assert "pip install 'podium[bench]'" in proc.stderr
    assert not out.exists()


def _row(target: str, rnd: int, rps: float, p50: float = 10.0, cpu: float = 1.0) -> dict:
    return {
        "target": target,
        "concurrency": 50,
        "round": rnd,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
        "server_cpu_ms_per_request": cpu,
        "ok": 10,
        "requests": 10,
        "errors": {},
    }


def test_server_ratios_are_taken_within_each_round() -> None:
    bench = _load("bench_server")
    podium = "podium pass-through (traces off)"
    # podium's best round (200) and LiteLLM's worst round (10) come from different rounds: best-of
    # per target would report 20x; within rounds the ratios are 1x and 2x.
    rounds = [
        [_row(podium, 1, 200.0), _row(bench.PEER, 1, 200.0), _row(bench.STUB, 1, 1000.0)],
        [_row(podium, 2, 20.0), _row(bench.PEER, 2, 10.0), _row(bench.STUB, 2, 100.0)],
    ]
    per_round = [bench.ratios(rows) for rows in rounds]
    summary = bench.spread_ratios(per_round)
    assert len(summary) == 1
    assert summary[0]["throughput_x_litellm"] == {"min": 1.0, "median": 1.5, "max": 2.0}
    assert summary[0]["fraction_of_stub_throughput"]["max"] == 0.2
    rows = bench.spread(rounds)
    podium_row = next(r for r in rows if r["target"] == podium)
    assert podium_row["rps"] == {"min": 20.0, "median": 110.0, "max": 200.0} and podium_row["rounds"] == 2


def test_before_ratios_pair_the_rounds_and_a_saved_report_renders_again(tmp_path: Path) -> None:
    bench = _load("bench_server")
    full, before = "podium pass-through (traces full)", bench.BEFORE_PREFIX + "session 13's code"
    rounds = [
        [_row(bench.STUB, 1, 1000.0), _row(full, 1, 120.0, cpu=0.9), _row(before, 1, 100.0)],
        [_row(bench.STUB, 2, 500.0), _row(full, 2, 40.0, cpu=1.1), _row(before, 2, 50.0)],
    ]
    mine = next(r for r in bench.spread_ratios([bench.ratios(x) for x in rounds]) if r["target"] == full)
    assert mine["throughput_x_before"] == {"min": 0.8, "median": 1.0, "max": 1.2}
    assert mine["server_cpu_x_before"] == {"min": 0.9, "median": 1.0, "max": 1.1}
    saved = tmp_path / "server.json"  # a report from before the req/s ratio existed
    saved.write_text(
        json.dumps(
            {
                "rows": bench.spread(rounds),
                "ratios": [],
                "rounds": rounds,
                "notes": [],
                "load": {"start": "s", "end": "e"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_server.py"), "--render", str(saved)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    again = json.loads(saved.read_text())
    assert next(r for r in again["ratios"] if r["target"] == full)["throughput_x_before"]["median"] == 1.0
    assert "req/s × before (same round)" in saved.with_suffix(".md").read_text()


def test_each_share_of_the_stub_is_against_the_stub_measured_just_before_it() -> None:
    bench = _load("bench_server")
    full, tier = "podium pass-through (traces full)", "podium tier 'podium'"
    stub = (bench.STUB, "url", "m", "k", 10, 1)
    targets = [stub, (bench.PEER,), (full,), (tier,), ("podium pass-through (traces off)",)]
    order = bench.beside_stub(targets[2:] + targets[:2], stub)  # a rotated round
    assert [t[0] for t in order] == [bench.STUB, full, tier, bench.STUB, targets[4][0], bench.PEER]
    # the machine halved its speed between the two stub runs: each share is against its own neighbour
    rows = [_row(bench.STUB, 1, 1000.0), _row(full, 1, 100.0), _row(tier, 1, 30.0), _row(bench.STUB, 1, 500.0)]
    rows += [_row("podium pass-through (traces off)", 1, 60.0), _row(bench.PEER, 1, 10.0)]
    shares = {r["target"]: r["fraction_of_stub_throughput"] for r in bench.ratios(rows)}
    assert shares == {full: 0.1, tier: 0.03, "podium pass-through (traces off)": 0.12}
    alone = bench.ratios([_row(full, 1, 100.0), _row(bench.STUB, 1, 400.0)])  # --no-stub-beside: the round's stub
    assert alone[0]["fraction_of_stub_throughput"] == 0.25


def test_overhead_is_against_raw_httpx_of_the_same_round() -> None:
    bench = _load("bench_overhead")
    rows = []
    for rnd, (raw, podium, peer) in enumerate([(1.0, 2.0, 11.0), (10.0, 12.0, 14.0)], start=1):
        for client, ms in (("raw httpx", raw), ("podium", podium), ("litellm Router", peer)):
            rows.append({"round": rnd, "concurrency": 1, "client": client, "median_ms": ms, "calls_per_s": 1.0})
    podium = next(r for r in bench.summarize(rows) if r["client"] == "podium")
    assert podium["overhead_ms"] == {"min": 1.0, "median": 1.5, "max": 2.0}
    assert podium["overhead_x_litellm"] == {"min": 0.1, "median": 0.3, "max": 0.5}


def test_the_gc_probe_counts_collections_and_their_cpu(tmp_path: Path) -> None:
    """bench/gc_probe (loaded through PYTHONPATH, as bench_server_gc.py loads it) reports each
    generation's collections and CPU on SIGUSR1; the benchmark diffs two reports around a load run."""
    out = tmp_path / "probe.jsonl"
    code = (
        "import gc, os, signal\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "for _ in range(3):\n"
        "    junk = [[] for _ in range(10_000)]\n"
        "    gc.collect(0); gc.collect(2)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
    )
    env = {**os.environ, "PODIUM_GC_PROBE": str(out), "PYTHONPATH": str(BENCH / "gc_probe")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert second["collections"][0] - first["collections"][0] >= 3
    assert second["collections"][2] - first["collections"][2] >= 3
    assert second["gc_cpu_s"][2] > first["gc_cpu_s"][2] and second["process_cpu_s"] >= first["process_cpu_s"]


def test_missing_py_spy_stops_the_profile(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "profile_server_spy.py"), "--py-spy", str(tmp_path / "no-py-spy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "py-spy not found" in proc.stderr


def test_the_py_spy_summary_splits_loop_threads_and_child(tmp_path: Path) -> None:
    spy = _load("profile_server_spy")
    serve = 'process 1:"python -m podium serve"'
    site = "/v/lib/python3.11/site-packages"
    raw = tmp_path / "samples.txt"
    raw.write_text(
        f"{serve};Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 6\n"
        f"{serve};ChatRoute._answer (/w/src/podium/server/fastroute.py:100);validate ({site}/pydantic/main.py:792) 3\n"
        f"{serve};Thread.run (/usr/lib/python3.11/threading.py:975);_send (/w/src/podium/traces/writer_process.py:9) 1\n"
        f'process 2:"python -m podium.traces.writer_child";main (/w/src/podium/traces/writer_child.py:5) 10\n'
    )
    text = spy.summarize(raw, 5)
    assert "samples: 20 at 200 Hz" in text
    assert " 50.0%  trace writer child process" in text and " 45.0%  event loop" in text
    assert " 66.7%  asyncio" in text and " 33.3%  pydantic" in text  # shares of the event loop's samples
    assert "validate (pydantic/main.py:792)" in text


def test_upstream_client_ratios_are_taken_within_each_round() -> None:
    """bench_upstream_client: a tree's ratio to the other (and to the bare protocol) pairs each round's
    figures; a tree from before post_json_read existed shows "-" for it, not a number."""
    module = _load("bench_upstream_client")

    def way(us: float) -> dict[str, float]:
        return {"us_cpu_per_call": us, "calls_per_s": 1.0}

    rounds = [  # the machine slows down in round 2: each tree's figure doubles, the paired ratio does not
        {"this tree": {"raw": way(10), "post_json_read": way(20), "backend.complete": way(40)},
         "before": {"raw": way(10), "backend.complete": way(80)}},
        {"this tree": {"raw": way(20), "post_json_read": way(40), "backend.complete": way(80)},
         "before": {"raw": way(20), "backend.complete": way(160)}},
    ]  # fmt: skip
    args = type("Args", (), {"rounds": 2, "calls": 100, "before_src": "x"})()
    report = module.summarize(rounds, ["this tree", "before"], args, ["a", "b"])
    assert report["ratios"]["backend.complete × before"] == {"min": 0.5, "median": 0.5, "max": 0.5}
    assert report["ratios"]["post_json_read × raw (this tree)"]["median"] == 2.0
    assert "post_json_read × before" not in report["ratios"]
    assert "| before | " in module.table(report) and " - |" in module.table(report)


def test_server_loop_ratios_are_taken_within_each_round() -> None:
    module = _load("bench_server_loop")
    fields = ("loop_ms_per_request", "process_ms_per_request", "rps")
    rounds = [
        {"this tree": dict(zip(fields, (0.3, 0.4, 3000.0))), "before": dict(zip(fields, (0.4, 0.5, 2000.0)))},
        {"this tree": dict(zip(fields, (0.6, 0.8, 1500.0))), "before": dict(zip(fields, (0.8, 1.0, 1000.0)))},
    ]
    summary = module.summarize(rounds, ["this tree", "before"])
    paired = summary["this tree × before (same round)"]
    assert paired["loop_ms_per_request"] == {"min": 0.75, "median": 0.75, "max": 0.75}
    assert paired["rps"]["median"] == 1.5
    assert summary["this tree"]["loop_ms_per_request"]["median"] == 0.45  # the unpaired median mixes rounds


def test_call_path_ratios_are_taken_within_each_round(tmp_path: Path) -> None:
    module = _load("bench_call_path")
    values = dict.fromkeys(module.ITEMS, 1.0)
    rounds = [
        {"this tree": {**values, "call, layers": 10.0}, "before": {**values, "call, layers": 20.0}},
        {"this tree": {**values, "call, layers": 30.0}, "before": {**values, "call, layers": 60.0}},
    ]
    items = module.summarize(rounds)
    assert items["call, layers"]["ratio"] == {"median": 0.5, "min": 0.5, "max": 0.5}
    assert items["call, layers"]["this tree"]["median"] == 20.0  # the unpaired median mixes rounds
    src = str(BENCH.parent / "src")
    proc = subprocess.run(  # both trees this one: each item is timed for real and the report written
        [sys.executable, str(BENCH / "bench_call_path.py"), "--before-src", src, "--rounds", "2"]
        + ["--block-s", "0.02", "--name", "t", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "call_path_t.json").read_text())
    assert len(report["per_round"]) == 2
    assert all(report["items"][item]["this tree"]["min"] > 0 for item in module.ITEMS)
    assert "| call, layers |" in (tmp_path / "call_path_t.md").read_text()


def test_the_timer_bench_times_both_ways_in_each_round(tmp_path: Path) -> None:
    bench = _load("bench_timers")
    rounds = [{"timer made and cancelled": 4.0, "deadline moved lazily": 1.0}] * 2
    rounds.append({"timer made and cancelled": 10.0, "deadline moved lazily": 2.0})
    assert bench.report(rounds, "x")["saved_us"] == {"median": 3.0, "min": 3.0, "max": 8.0}
    command = [sys.executable, str(BENCH / "bench_timers.py"), "--rounds", "2", "--calls", "2000", "--name", "t"]
    proc = subprocess.run([*command, "--results", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "timers_t.json").read_text())
    assert len(report["per_round"]) == 2 and report["timer made and cancelled"]["min"] > 0
    assert "| saved (same round) |" in (tmp_path / "timers_t.md").read_text()
