"""Pass-through models keep the engine's reliability: a stream broken midway is spliced onto its
retry (the client never sees text twice), and a failing model falls back; against the real fault
server (tests/faults) on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from faults.helpers import model
from faults.server import DEFAULT_REPLY, FaultServer
from podium.pool import parse_pool
from podium.server.app import create_app
from podium.server.traces import Traces


def app_for(url: str, tmp_path: Path, main_fault: str):
    pool = {
        "name": "faulty",
        "models": [model("main", url, main_fault, fallbacks=["backup"]), model("backup", url, "ok")],
        "defaults": {"worker": "main", "thinker": "main", "verifier": "main", "coordinator": "main"},
    }
    return create_app(parse_pool(yaml.safe_dump(pool), "faulty pool"), traces=Traces(tmp_path / "podium.db"))


async def post(app, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return await client.post("/v1/chat/completions", json=body)


def streamed_text(response: httpx.Response) -> str:
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))


async def test_broken_stream_is_spliced_not_repeated(fault_server: FaultServer, tmp_path: Path) -> None:
    app = app_for(fault_server.url, tmp_path, "reset_mid*1/server-splice")
    r = await post(
        app, {"model": "main", "stream": True, "messages": [{"role": "user", "content": "six times seven?"}]}
    )
    assert r.status_code == 200
    assert streamed_text(r) == DEFAULT_REPLY
    trace = (
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1").get(
            f"/v1/traces/{r.headers['x-podium-trace-id']}"
        )
    ).json()
    assert trace["turns"][0]["retries"] >= 1 and trace["turns"][0]["error"] is None


async def test_failing_passthrough_falls_back(fault_server: FaultServer, tmp_path: Path) -> None:
    app = app_for(fault_server.url, tmp_path, "http:500")
    r = await post(app, {"model": "main", "messages": [{"role": "user", "content": "six times seven?"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert body["podium"]["turns"][0]["model"] == "backup" and body["podium"]["turns"][0]["fallback_from"] == "main"


async def test_every_model_failing_is_502_with_trace(fault_server: FaultServer, tmp_path: Path) -> None:
    url = fault_server.url
    pool = {"name": "dead", "models": [model("main", url, "http:500")], "defaults": {}}
    app = create_app(parse_pool(yaml.safe_dump(pool), "dead pool"), traces=Traces(tmp_path / "podium.db"))
    r = await post(app, {"model": "main", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and r.json()["error"]["code"] == "run_failed"
    assert r.headers["x-podium-trace-id"].startswith("run_")
