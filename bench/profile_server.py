"""Where ``podium serve`` spends its CPU on pass-through requests: cProfile of the server process.

Starts the stub upstream and ``podium serve`` (under ``python -m cProfile``) exactly as
bench/bench_server.py does, sends ``--requests`` non-streaming requests from ``--concurrency``
keep-alive clients to the pool model, stops the server (SIGTERM: cProfile writes its file on a
clean exit) and prints the top functions by own time and by cumulative time, plus the server's
CPU per request measured without the profiler in the same run.

    python bench/profile_server.py [--requests 2000] [--concurrency 50] [--traces off]
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

# cProfile on the thread's CPU clock: time the event-loop thread waits (for the GIL held by the trace
# writer's thread, or preempted by the machine's load) is not charged to whatever function it was in.
_CPU_PROFILE = (
    "import cProfile, runpy, sys, time\n"
    "out, module = sys.argv.pop(1), sys.argv.pop(1)\n"
    "profiler = cProfile.Profile(time.thread_time)\n"
    "profiler.enable()\n"
    "try:\n"
    "    runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    profiler.disable()\n"
    "    profiler.dump_stats(out)\n"
)


def thread_cpu(pid: int) -> dict[tuple[str, str], float]:
    """CPU seconds of each thread of ``pid`` so far, by (thread id, name) (Linux /proc)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[(task.name, name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def start(
    paths: dict[str, Path], work: Path, traces: str, profile: Path | None, clock: str = "wall"
) -> tuple[subprocess.Popen, str]:
    port = bs.free_port()
    env = {**os.environ, "PODIUM_HOME": str(work / f"home-{traces}-{bool(profile)}"), "PODIUM_TRACES": traces}
    if profile and clock == "cpu":
        prefix = [sys.executable, "-c", _CPU_PROFILE, str(profile)]
    elif profile:
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m"]
    else:
        prefix = [sys.executable, "-m"]
    cmd = [*prefix, "podium", "serve", "--pool", str(paths["pool"]), "--keys", str(paths["keys"])]
    proc = bs.spawn([*cmd, "--port", str(port), "--log-level", "warning"], env, work / f"podium-{bool(profile)}.log")
    bs.wait_up(f"http://127.0.0.1:{port}/healthz", proc, 60)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--traces", default="off", choices=["off", "full"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cProfile's timer: wall clock, or the event-loop thread's CPU time (no GIL waits or preemption)",
    )
    parser.add_argument("--out", default=None, help="write the printed summary to this file too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="podium-profile-"))
    stub_port = bs.free_port()
    stub = bs.spawn([sys.executable, bs.__file__, "--stub", str(stub_port)], dict(os.environ), work / "stub.log")
    out = io.StringIO()
    try:
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        bs.wait_up(f"{stub_url}/models", stub, 30)
        paths = bs.write_configs(work, stub_url)
        load_start = bs.uptime()
        for profile in (None, work / "server.prof"):
            proc, url = start(paths, work, args.traces, profile, args.clock)
            try:
                rows = bs.measure("podium", url, bs.MODEL, bs.PODIUM_KEY, [args.concurrency], args.requests, proc.pid)
                stub_rows = bs.measure(
                    "stub", f"{stub_url}/chat/completions", bs.MODEL, "x", [args.concurrency], args.requests, stub.pid
                )
                if profile is None:  # the same load again, its CPU split by thread (loop vs trace writer)
                    before = thread_cpu(proc.pid)
                    bs.measure("podium", url, bs.MODEL, bs.PODIUM_KEY, [args.concurrency], args.requests, proc.pid)
                    after = thread_cpu(proc.pid)
                    used = {t: cpu - before.get(t, 0.0) for t, cpu in after.items()}
                    split = ", ".join(
                        f"{'event loop' if tid == str(proc.pid) else 'thread ' + tid} {1000 * cpu / args.requests:.3f}"
                        for (tid, _), cpu in sorted(used.items(), key=lambda kv: -kv[1])
                        if cpu > 0
                    )
                    print(f"CPU ms/request by thread (the same load again, without profiler): {split}", file=out)
            finally:  # SIGINT: uvicorn re-raises it as KeyboardInterrupt, and cProfile still writes its file
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)
            label = "with cProfile" if profile else "without profiler"
            r, s = rows[0], stub_rows[0]
            print(
                f"{label}: {r['rps']} req/s ({r['rps'] / s['rps']:.3f} of the stub's {s['rps']} in the same run), "
                f"server CPU {r['server_cpu_ms_per_request']} ms/request",
                file=out,
            )
        print(f"load: start `{load_start}`, end `{bs.uptime()}`; cProfile clock: {args.clock}\n", file=out)
        stats = pstats.Stats(str(work / "server.prof"), stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    finally:
        bs.stop(stub)
    text = out.getvalue()
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
