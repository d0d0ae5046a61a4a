"""Where the engine spends its CPU: cProfile of scripted 3-turn runs, with and without the store.

The runs are bench/bench_engine_store.py's (the ``rules`` coordinator, thinker -> worker -> verifier
ACCEPT, instant scripted models), so what is profiled is the engine, its reliability layers and the
event handler. With ``--store background`` the trace store's batched writer runs in its own thread,
and with ``--store process`` in a child process, neither of which cProfile follows: the profile then
shows what the store costs the event loop (handing runs over, and waiting for the GIL while the
writer's threads hold it), not the writer's SQLite work. Runs/s is also measured without the profiler in the same
process, interleaved, so the profile's share can be read against the real rate.

With ``--store process`` the file also profiles the writer process's work on the same runs, in
this process: decoding each run (:func:`podium.traces._batch.decode`), scrubbing, building the rows
and the SQL, in batches as large as the child received them.

``--timer cpu`` (the default) profiles with the event-loop thread's CPU clock, so neither the
operating system's preemption on a loaded machine nor waits for the GIL (while another thread holds
it) are charged to whichever function was running; ``--timer wall`` keeps both.

    python bench/profile_engine.py [--runs 1000] [--concurrency 10] [--store process|background|none]
        [--timer cpu|wall]

Writes bench/results/profile_engine.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine_store as bes

VARIANT = {"background": "store (background writer)", "none": "no store", "process": "store (writer process)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--store", choices=sorted(VARIANT), default="background")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timer", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--out", default=str(bes.RESULTS / "profile_engine.txt"))
    args = parser.parse_args()
    load_start = bes.uptime()
    variant = VARIANT[args.store]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp)
        asyncio.run(bes.runs_per_s(variant, 100, args.concurrency, db / "warm.db"))  # imports, caches
        plain = [asyncio.run(bes.runs_per_s(variant, args.runs, args.concurrency, db / "plain0.db"))[0]]
        profiler = cProfile.Profile(time.thread_time) if args.timer == "cpu" else cProfile.Profile()
        profiler.enable()
        profiled, _ = asyncio.run(bes.runs_per_s(variant, args.runs, args.concurrency, db / "profiled.db"))
        profiler.disable()
        plain.append(asyncio.run(bes.runs_per_s(variant, args.runs, args.concurrency, db / "plain1.db"))[0])
    head = [
        f"{args.runs} scripted 3-turn runs, {args.concurrency} concurrent, {variant}, under cProfile: "
        f"{profiled:.0f} runs/s (without the profiler, before and after: "
        f"{plain[0]:.0f} and {plain[1]:.0f} runs/s). Timer: {args.timer}"
        + (" (this thread's CPU time)." if args.timer == "cpu" else " (wall clock)."),
        f"Load at start: {load_start}",
        f"Load at end: {bes.uptime()}",
        "",
    ]
    sections = []
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(key).print_stats(args.top)
        sections.append(f"=== by {key} ===\n" + buf.getvalue().split("\n", 2)[-1])
    buf = io.StringIO()  # what handing runs to the store costs this thread
    pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(r"store\.py|writer|queue")
    sections.append("=== the store's share (handler, writer, queue) ===\n" + buf.getvalue().split("\n", 2)[-1])
    if args.store == "process":
        sections.append(child_profile(args.runs, args.concurrency, args.top))
    text = "\n".join(head) + "\n".join(sections)
    print(text)
    Path(args.out).write_text(text)


def child_profile(runs: int, concurrency: int, top: int) -> str:
    """cProfile of what the writer child does per batch, run here on ``runs`` engine runs."""
    from podium.engine import Engine, RunFinished
    from podium.traces._batch import decode, encode
    from podium.traces.store import Store
    from podium.traces.writer import write_batch

    blobs: list[bytes] = []
    engine = Engine(bes.pool(), "rules")

    def keep(event: object) -> None:
        if isinstance(event, RunFinished):
            blobs.append(encode(event.result))

    async def go() -> None:
        await asyncio.gather(*(engine.run("What is 40 + 2? Explain the steps.", on_event=keep) for _ in range(runs)))
        await engine.aclose()

    asyncio.run(go())
    batch = max(1, int(statistics.median([c[2] for c in bes.COSTS.get(bes.VARIANTS[3], [(0, 0, 128)])]) or 128))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "child.db")
        profiler = cProfile.Profile(time.process_time)
        began = time.process_time()
        profiler.enable()
        for i in range(0, len(blobs), batch):
            write_batch(store, [(decode(b), "bench", None) for b in blobs[i : i + batch]])
        profiler.disable()
        took = time.process_time() - began
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats("tottime").print_stats(top)
    return (
        f"=== the writer child's work, profiled here: {runs} runs in batches of {batch}, "
        f"{took / runs * 1e3:.3f} ms/run under the profiler ===\n" + buf.getvalue().split("\n", 2)[-1]
    )


if __name__ == "__main__":
    main()
