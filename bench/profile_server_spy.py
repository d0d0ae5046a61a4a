"""Where ``podium serve`` spends its CPU on pass-through requests, sampled from outside by py-spy.

cProfile (bench/profile_server.py) slows the server about fourfold and never sees the garbage
collector or time in C; py-spy samples the running server (its threads and its trace writer's child
process) without changing it. Starts bench/bench_server.py's stub and ``podium serve`` (traces on,
its own trace writer), warms up, then records ``--seconds`` of samples while ``--concurrency``
keep-alive clients send non-streaming requests to the pool model. Reports where the samples fell:
the event loop, the server's other threads, the trace writer's child; for the event loop, the
share of each package and the top functions by own time (a function's own samples include the C
it calls: json, SQLite, socket writes). Also the server's throughput and CPU per request without
the profiler, and the stub's, in the same run. Writes bench/results/profile_server_spy_NAME.txt.

    python bench/profile_server_spy.py [--seconds 20] [--name session10] [--py-spy PATH]

py-spy is not a podium dependency: ``pip install py-spy`` anywhere and pass its executable (default:
``py-spy`` next to this Python or on PATH). Missing, the script stops (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

RATE = 200  # samples per second
NATIVE = "(no Python frame: C code, the garbage collector)"


def find_py_spy(given: str | None) -> str | None:
    if given:
        return given if Path(given).exists() else None
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def thread_cpu(pid: int) -> float:
    """CPU seconds so far of the main thread of ``pid`` (the event loop's; Linux /proc)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def where(stack: str) -> str:
    """Which part of the server a sampled stack belongs to."""
    if "writer_child" in stack:
        return "trace writer child process"
    if "threading.py" in stack:
        return "server threads (trace writer's sender and reader, others)"
    return "event loop"


def package(frame: str) -> str:
    """``podium/server/chat.py`` for podium's modules, else the top-level package or module."""
    match = re.search(r"\((.*?):\d+\)$", frame)
    if not match:
        return NATIVE
    path = re.sub(r"^.*?/site-packages/", "", match.group(1))
    path = re.sub(r"^.*?/src/(podium/)", r"\1", path)
    if path.startswith("podium/"):
        return path
    return re.sub(r"^.*/lib/python3\.\d+/", "", path).split("/")[0]


def summarize(raw: Path, top: int) -> str:
    parts: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():  # a frame name py-spy wrote with a line break in it
            continue
        n = int(count)
        part = where(stack)
        parts[part] += n
        if part != "event loop":
            continue
        leaf = stack.split(";")[-1]
        name = NATIVE if leaf.startswith("process ") else re.sub(r"\(.*?/(site-packages|src)/", "(", leaf)
        own[name] += n
        packages[package(leaf)] += n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")[1:]}:  # not the process
            inclusive[frame] += n
    total, loop = sum(parts.values()), parts["event loop"]
    out = [f"samples: {total} at {RATE} Hz ({total / RATE:.1f} CPU-s)"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in parts.most_common()]
    out += ["", "event loop, by package (own time; C called from a function counts as that function's):"]
    out += [f"  {100 * n / loop:5.1f}%  {name}" for name, n in packages.most_common(top)]
    out += ["", f"event loop, top {top} functions by own time:"]
    out += [f"  {100 * n / loop:5.2f}%  {name}" for name, n in own.most_common(top)]
    out += ["", f"event loop, top {2 * top} functions by inclusive time (their own and their callees'):"]
    out += [f"  {100 * n / loop:5.2f}%  {name}" for name, n in inclusive.most_common(2 * top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--name", default="latest")
    parser.add_argument("--py-spy", default=None, help="path to the py-spy executable")
    args = parser.parse_args()
    spy = find_py_spy(args.py_spy)
    if spy is None:
        print("error: py-spy not found: pip install py-spy, or pass --py-spy PATH", file=sys.stderr)
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="podium-spy-"))
    port = bs.free_port()
    stub = bs.spawn([sys.executable, bs.__file__, "--stub", str(port)], dict(os.environ), work / "stub.log")
    lines = [f"load at start: `{bs.uptime()}`"]
    try:
        stub_url = f"http://127.0.0.1:{port}/v1"
        bs.wait_up(f"{stub_url}/models", stub, 60)
        paths = bs.write_configs(work, stub_url)
        proc, url = bs.start_podium(paths, work, "full")
        try:
            lines.append(f"trace writer: {bs.default_writer()} (podium serve's own choice on this machine)")
            asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, 20, 500))  # warm-up
            raw = work / "samples.txt"
            cmd = [spy, "record", "-p", str(proc.pid), "-r", str(RATE), "-d", str(args.seconds), "-s"]
            recorder = subprocess.Popen(
                [*cmd, "-f", "raw", "-o", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            started, sent = time.monotonic(), 0
            while recorder.poll() is None:
                sent += asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, args.concurrency, 1000))["ok"]
            lines.append(f"sampled while {sent} requests were answered ({sent / (time.monotonic() - started):.0f}/s)")
            cpu, loop_cpu = bs.cpu_seconds(proc.pid), thread_cpu(proc.pid)
            row = asyncio.run(bs.load(url, bs.MODEL, bs.PODIUM_KEY, args.concurrency, 3000))
            podium_cpu = 1000 * (bs.cpu_seconds(proc.pid) - cpu) / row["ok"]
            loop_cpu = thread_cpu(proc.pid) - loop_cpu
        finally:
            bs.stop(proc)
        cpu = bs.cpu_seconds(stub.pid)
        stub_row = asyncio.run(bs.load(f"{stub_url}/chat/completions", bs.MODEL, "x", args.concurrency, 10_000))
        stub_cpu = 1000 * (bs.cpu_seconds(stub.pid) - cpu) / stub_row["ok"]
    finally:
        bs.stop(stub)
    lines.append(
        f"without the profiler: the event loop's thread {1000 * loop_cpu / row['ok']:.3f} ms CPU/request, busy "
        f"{loop_cpu / row['wall_s']:.0%} of the time (the bottleneck when near 100%)"
    )
    lines.append(
        f"without the profiler: podium {row['rps']} req/s at {podium_cpu:.3f} ms CPU/request (its child counted); "
        f"the stub {stub_row['rps']} req/s at {stub_cpu:.3f} ms; podium/stub {row['rps'] / stub_row['rps']:.3f}"
    )
    lines.append(f"load at end: `{bs.uptime()}`\n")
    text = "\n".join(lines) + "\n" + summarize(raw, args.top) + "\n"
    print(text)
    out = bs.RESULTS / f"profile_server_spy_{args.name}.txt"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
