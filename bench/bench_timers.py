"""What a per-request timer costs on ``podium serve``'s event loop (uvloop): making and cancelling
one (``call_later`` then ``cancel``: the request-head deadline before session 15, and still each
model call's total time limit, the upstream read timeout and uvicorn's keep-alive timer), against
what a lazily moved deadline costs per request (reading the loop's clock and storing the due time:
:class:`podium.server.http._HeadDeadline` since session 15).

Both are timed in the same process, alternating in blocks, ``--rounds`` times; the ratio is taken
within each round and reported as median (min–max). Writes bench/results/timers_NAME.{json,md}.

    .venv/bin/python bench/bench_timers.py [--rounds 7] [--calls 100000] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_call_path import write_results

RESULTS = Path(__file__).resolve().parent / "results"


def made_and_cancelled(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    def one() -> None:
        loop.call_later(10.0, _nothing).cancel()

    return one


def moved_lazily(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    state = {"due": 0.0}

    def one() -> None:
        state["due"] = loop.time() + 10.0

    return one


def _nothing() -> None:
    pass


def block(one: Callable[[], None], calls: int) -> float:
    """Microseconds per call of ``one`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        one()
    return (time.perf_counter() - start) / calls * 1e6


async def measure(rounds: int, calls: int) -> list[dict[str, float]]:
    loop = asyncio.get_running_loop()
    ways = {"timer made and cancelled": made_and_cancelled(loop), "deadline moved lazily": moved_lazily(loop)}
    for one in ways.values():
        block(one, calls // 10)  # warm-up
    out = []
    for i in range(rounds):
        names = list(ways) if i % 2 == 0 else list(reversed(ways))
        out.append({name: block(ways[name], calls) for name in names})
        await asyncio.sleep(0)  # let the loop run its (cancelled) timers between rounds
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def report(per_round: list[dict[str, float]], loop_name: str) -> dict:
    made, lazy = "timer made and cancelled", "deadline moved lazily"
    return {
        "loop": loop_name,
        "rounds": len(per_round),
        made: spread([r[made] for r in per_round]),
        lazy: spread([r[lazy] for r in per_round]),
        "saved_us": spread([r[made] - r[lazy] for r in per_round]),
        "per_round": per_round,
    }


def table(rep: dict) -> str:
    rows = [f"Event loop: {rep['loop']}; {rep['rounds']} rounds, µs per request, median (min–max).", ""]
    rows += ["| per request | µs |", "|---|---:|"]
    for name in ("timer made and cancelled", "deadline moved lazily", "saved_us"):
        s = rep[name]
        rows.append(f"| {name.replace('saved_us', 'saved (same round)')} | {s['median']} ({s['min']}–{s['max']}) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--name", default="latest")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        print("uvloop is not installed (it comes with the server extra: pip install 'podium[server]')", file=sys.stderr)
        raise SystemExit(2) from None
    load = os.getloadavg()[0]
    rep = report(uvloop.run(measure(args.rounds, args.calls)), f"uvloop {uvloop.__version__}")
    rep["load_1m_start_end"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    text = table(rep)
    print(text)
    write_results(args.results, f"timers_{args.name}", f"Timers ({args.name})", rep, text)


if __name__ == "__main__":
    main()
