"""Speculative streaming on a real ``podium serve`` (a real socket, so arrival times are real): the
client reads the worker's draft while the verifier is still checking it, then the revision after
the documented marker; the held tier sends only the verified answer, later; the trace has both."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from podium.server.speculative import REVISED
from podium_process import PodiumServer

VERIFIER_S = 1.5
WORKER_S = 0.2


def write_setup(home: Path) -> tuple[Path, Path]:
    scripted = {"backend": "scripted"}
    pool = {
        "name": "spec",
        "models": [
            {"name": "t", **scripted, "replies": ["plan: multiply"], "roles": ["thinker"]},
            {"name": "w", **scripted, "roles": ["worker"]}
            | {"replies": [f"!sleep {WORKER_S}\nDraft: 41", f"!sleep {WORKER_S}\nRevised: 42"]},
            {"name": "v", **scripted, "roles": ["verifier"]}
            | {"replies": [f"!sleep {VERIFIER_S}\nREVISE: 6 * 7 is not 41", "ACCEPT: correct"]},
        ],
        "defaults": {"thinker": "t", "worker": "w", "verifier": "v"},
    }
    tier = {"coordinator": "rules", "max_turns": 5, "roles": ["thinker", "worker", "verifier"]}
    tiers = {"tiers": [{"name": "fast", "speculative": True, **tier}, {"name": "held", **tier}]}
    (home / "pool.yaml").write_text(yaml.safe_dump(pool))
    (home / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    return home / "pool.yaml", home / "tiers.yaml"


def stream(url: str, model: str) -> tuple[list[tuple[float, str]], str]:
    """(seconds since the request, text) of each content chunk, and the trace id."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 6 * 7?"}], "stream": True}
    out: list[tuple[float, str]] = []
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        trace_id = r.headers["x-podium-trace-id"]
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk: dict[str, Any] = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    if choice["delta"].get("content"):
                        out.append((time.perf_counter() - started, choice["delta"]["content"]))
    return out, trace_id


def test_draft_first_then_the_revision_after_the_marker(tmp_path: Path) -> None:
    pool, tiers = write_setup(tmp_path)
    with PodiumServer(pool, tmp_path, args=["--tiers", str(tiers)]) as server:
        chunks, trace_id = stream(server.url, "fast")
        held, _ = stream(server.url, "held")
        trace = httpx.get(f"{server.url}/v1/traces/{trace_id}", timeout=10).json()
    text = "".join(t for _, t in chunks)
    assert text == f"Draft: 41{REVISED}Revised: 42"
    first_at = chunks[0][0]
    marker_at = next(at for at, t in chunks if t == REVISED)
    # the draft arrived while the verifier was still checking it: the revision came a verifier's time later
    assert marker_at - first_at >= VERIFIER_S - 0.05, (first_at, marker_at)
    assert first_at < marker_at - VERIFIER_S + 1.0
    # the held stream sends only the verified answer, after the verifier: later than the draft by about VERIFIER_S
    assert "".join(t for _, t in held) == "Revised: 42"
    assert held[0][0] >= VERIFIER_S + 2 * WORKER_S - 0.05 and held[0][0] > first_at + VERIFIER_S - 0.3
    # the trace has the draft, the verdict asking for a revision, the revision and the accept
    turns = [(t["role"], t["response"] or "") for t in trace["turns"]]
    workers = [out for role, out in turns if role == "worker"]
    assert any("Draft: 41" in o for o in workers) and any("Revised: 42" in o for o in workers), turns
    assert [role for role, _ in turns] == ["thinker", "worker", "verifier", "worker", "verifier"]
    assert [t["verdict"] for t in trace["turns"] if t["role"] == "verifier"] == ["REVISE", "ACCEPT"]
    assert trace["workflow"]["speculative"] == {"markers_sent": 1}


async def test_an_accepted_draft_has_no_marker_and_plain_responses_are_unchanged(tmp_path: Path) -> None:
    from podium.server.app import create_app
    from podium.server.traces import Traces

    pool, tiers = write_setup(tmp_path)
    config = yaml.safe_load(pool.read_text())
    config["models"][1]["replies"] = ["The answer is 42."]
    config["models"][2]["replies"] = ["ACCEPT: correct"]
    pool.write_text(yaml.safe_dump(config))
    app = create_app(str(pool), tiers=tiers, traces=Traces(None))
    ask = {"model": "fast", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        r = await http.post("/v1/chat/completions", json={**ask, "stream": True})
        pieces = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in pieces if c.get("choices"))
        assert text == "The answer is 42."  # accepted: the draft was the answer, no marker
        plain = (await http.post("/v1/chat/completions", json=ask)).json()
        assert plain["choices"][0]["message"]["content"] == "The answer is 42."
