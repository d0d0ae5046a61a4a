"""Time to first token of a tier's stream: speculative (the worker's draft at once) against today's
held stream (only the verified answer), in the same run, on the same real server.

``podium serve`` runs in-process under uvicorn on 127.0.0.1 with a scripted pool whose models
sleep like real ones (thinker ``--thinker-s``, worker ``--worker-s``, verifier ``--verifier-s``)
and two tiers over it, identical but for ``speculative: true``. Two scenarios: the verifier
accepts the first draft, or asks for one revision. Requests alternate between the tiers; each is
a streamed chat read over a real socket. Reported per tier: mean time to the first content chunk
and to the end of the stream, with 95% intervals (t distribution), and the held / speculative
ratio of the means. Writes bench/results/speculative.{json,md}.

    PYTHONPATH=src .venv/bin/python bench/bench_speculative.py [--requests 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

RESULTS = Path(__file__).parent / "results"
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26, 12: 2.20, 16: 2.13, 20: 2.09}


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% interval (t distribution)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    t = T95.get(len(values), 2.0)
    return mean, t * statistics.stdev(values) / len(values) ** 0.5


def setup(home: Path, args: argparse.Namespace, revise: bool) -> tuple[Path, Path]:
    sleep = lambda s, text: f"!sleep {s}\n{text}"  # noqa: E731
    drafts = [sleep(args.worker_s, "Draft: 41"), sleep(args.worker_s, "Revised: 42")] if revise else None
    verdicts = [sleep(args.verifier_s, "REVISE: 6 * 7 is 42"), sleep(args.verifier_s, "ACCEPT: ok")]
    scripted = {"backend": "scripted"}
    pool = {
        "name": "speculative-bench",
        "models": [
            {"name": "t", **scripted, "replies": [sleep(args.thinker_s, "plan: multiply")], "roles": ["thinker"]},
            {"name": "w", **scripted, "replies": drafts or [sleep(args.worker_s, "The answer is 42.")]}
            | {"roles": ["worker"]},
            {"name": "v", **scripted, "replies": verdicts if revise else verdicts[1:], "roles": ["verifier"]},
        ],
        "defaults": {"thinker": "t", "worker": "w", "verifier": "v"},
    }
    tier = {"coordinator": "rules", "max_turns": 5, "roles": ["thinker", "worker", "verifier"]}
    tiers = {"tiers": [{"name": "speculative", "speculative": True, **tier}, {"name": "held", **tier}]}
    (home / "pool.yaml").write_text(yaml.safe_dump(pool))
    (home / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    return home / "pool.yaml", home / "tiers.yaml"


def serve(pool: Path, tiers: Path) -> tuple[Any, str]:
    import uvicorn

    from podium.server.app import create_app
    from podium.server.traces import Traces

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(str(pool), tiers=tiers, traces=Traces(None))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


async def one(client: httpx.AsyncClient, url: str, model: str) -> tuple[float, float, str]:
    """(time to first content, time to the end, the text) of one streamed chat."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 6 * 7?"}], "stream": True}
    started, first, text = time.perf_counter(), None, ""
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    piece = choice["delta"].get("content")
                    if piece:
                        first = first or time.perf_counter() - started
                        text += piece
    return first or float("nan"), time.perf_counter() - started, text


async def scenario(url: str, requests: int, label: str) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {t: {"ttft": [], "total": []} for t in ("speculative", "held")}
    texts: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(requests):
            for tier in ("speculative", "held") if i % 2 == 0 else ("held", "speculative"):
                ttft, total, text = await one(client, url, tier)
                samples[tier]["ttft"].append(ttft)
                samples[tier]["total"].append(total)
                texts[tier] = text
            print(f"  {label}: {i + 1}/{requests} request pairs", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"texts": texts}
    for tier, s in samples.items():
        out[tier] = {k: dict(zip(("mean_s", "ci95_s"), ci95(v), strict=True)) | {"samples": v} for k, v in s.items()}
    out["ttft_ratio_held_over_speculative"] = out["held"]["ttft"]["mean_s"] / out["speculative"]["ttft"]["mean_s"]
    out["total_ratio_held_over_speculative"] = out["held"]["total"]["mean_s"] / out["speculative"]["total"]["mean_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="request pairs per scenario")
    parser.add_argument("--thinker-s", type=float, default=0.2)
    parser.add_argument("--worker-s", type=float, default=0.4)
    parser.add_argument("--verifier-s", type=float, default=1.0)
    args = parser.parse_args()
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results: dict[str, Any] = {"settings": vars(args), "uptime_before": load_before}
    for label, revise in (("accepted", False), ("revised", True)):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PODIUM_HOME"] = tmp
            server, url = serve(*setup(Path(tmp), args, revise))
            try:
                results[label] = asyncio.run(scenario(url, args.requests, label))
            finally:
                server.should_exit = True
                time.sleep(0.3)
    results["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "speculative.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "speculative.md").write_text(report(results))
    print(report(results))


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        "# Speculative streaming: time to first token against the held stream",
        "",
        f"`bench/bench_speculative.py --requests {s['requests']}`: a real `podium serve` (uvicorn, 127.0.0.1), "
        f"scripted models that sleep (thinker {s['thinker_s']} s, worker {s['worker_s']} s, verifier "
        f"{s['verifier_s']} s), tier `rules` up to 5 turns; two tiers identical but for `speculative: true`, "
        "requests alternating between them. Means with 95% intervals.",
        "",
        f"Load before: `{r['uptime_before']}`; after: `{r['uptime_after']}`.",
        "",
        "| scenario | tier | first token (s) | whole stream (s) | client text |",
        "|---|---|---|---|---|",
    ]
    for label in ("accepted", "revised"):
        for tier in ("speculative", "held"):
            t = r[label][tier]
            text = r[label]["texts"][tier].replace("\n", "\\n")
            lines.append(
                f"| {label} | {tier} | {t['ttft']['mean_s']:.3f} ± {t['ttft']['ci95_s']:.3f} | "
                f"{t['total']['mean_s']:.3f} ± {t['total']['ci95_s']:.3f} | `{text}` |"
            )
    lines += ["", "| scenario | first token: held / speculative | whole stream: held / speculative |", "|---|---|---|"]
    for label in ("accepted", "revised"):
        lines.append(
            f"| {label} | {r[label]['ttft_ratio_held_over_speculative']:.2f}x | "
            f"{r[label]['total_ratio_held_over_speculative']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
