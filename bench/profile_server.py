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


def start(paths: dict[str, Path], work: Path, traces: str, profile: Path | None) -> tuple[subprocess.Popen, str]:
    port = bs.free_port()
    env = {**os.environ, "PODIUM_HOME": str(work / f"home-{traces}-{bool(profile)}"), "PODIUM_TRACES": traces}
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m"] if profile else [sys.executable, "-m"]
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
            proc, url = start(paths, work, args.traces, profile)
            try:
                rows = bs.measure("podium", url, bs.MODEL, bs.PODIUM_KEY, [args.concurrency], args.requests, proc.pid)
                stub_rows = bs.measure(
                    "stub", f"{stub_url}/chat/completions", bs.MODEL, "x", [args.concurrency], args.requests, stub.pid
                )
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
        print(f"load: start `{load_start}`, end `{bs.uptime()}`\n", file=out)
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
