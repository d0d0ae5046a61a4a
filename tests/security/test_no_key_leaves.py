"""Keys of every common provider shape, planted in innocently named variables, never leave podium.

A real upstream on 127.0.0.1 rejects every call and echoes the Authorization header (and the bare
token) in its error body. A real ``podium serve`` process and the ``podium`` CLI are driven through
errors (pass-through, streaming, tiers with the prompted coordinator, open circuits, traces,
breaker status), the user's question itself pastes the keys, and then every byte podium wrote is
searched: HTTP responses, CLI stdout and stderr, and every file under PODIUM_HOME (the trace
database, its WAL and shared-memory files, breakers.json, the server's log). Zero hits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("uvicorn", reason="uvicorn is in the 'server' extra")

from echo_upstream import echo_upstream
from podium_process import PodiumServer

# variable (innocent name) -> a made-up key of one provider's shape
PLANTED = {
    "APP_THEME": "sk-proj-Qw3rTy8uIo9pAs7dFg6hJk5lZx4cVb3nM2",  # OpenAI
    "BUILD_FLAVOUR": "sk-ant-api03-Zx9cV8bN7mQ6wE5rT4yU3iO2pA1sD0fG",  # Anthropic
    "REGION_HINT": "AIzaSyD3xk4Lm5Np6Qr7St8Uv9Wx0Yz1Ab2Cd3E",  # Google
    "CACHE_LAYOUT": "gsk_8fK2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hJ4",  # Groq
    "LOCALE_FALLBACK": "hf_QwErTyUiOpAsDfGhJkLzXcVbNm1234567",  # Hugging Face
    "CONFIG_SEED": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f",  # 64 hex (Together, ...)
    "PROFILE_NAME": "xai-Q1w2E3r4T5y6U7i8O9p0AsDfGhJkL",  # xAI
    "UPSTREAM_SETTING": "plainvalue-7Hq2Zk9Wm4Rt",  # no shape: known only as a pool's api_key_env
}


def fragments(key: str) -> list[bytes]:
    """The key and a distinctive middle piece of it (a cut key must not survive either)."""
    return [key.encode(), key[len(key) // 3 : len(key) // 3 + 10].encode()]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, podium_home: Path) -> dict[str, str]:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PODIUM_HOME": str(podium_home)}


def write_pool(folder: Path, url: str) -> Path:
    names = list(PLANTED)
    models = [
        {
            "name": f"m{i}",
            "backend": "openai",
            "base_url": url,
            "model": f"m{i}",
            "api_key_env": var,
            "max_retries": 0,
            "breaker_threshold": 2,
            "breaker_open_s": 60,
            "timeout_s": 10,
            "fallbacks": [f"m{j}" for j in range(len(names)) if j != i],
        }
        for i, var in enumerate(names)
    ]
    pool = {
        "name": "leaky",
        "models": models,
        "defaults": {"worker": "m0", "thinker": "m1", "verifier": "m2", "coordinator": "m3"},
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


QUESTION = "My keys are " + ", ".join(v for k, v in PLANTED.items()) + "; Authorization: Bearer " + PLANTED["APP_THEME"]


def drive_server(server: PodiumServer) -> list[bytes]:
    """Every response body the server gives for a run of failing requests."""
    out: list[bytes] = []
    ask = [{"role": "user", "content": QUESTION}]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for body in (
            {"model": "m0", "messages": ask},
            {"model": "m0", "messages": ask, "stream": True},
            {"model": "podium", "messages": ask},
            {"model": "podium", "messages": ask, "stream": True},
            {"model": "m5", "messages": ask},
            {"model": "m0", "messages": ask},
        ):  # the last ones: circuits open
            r = client.post("/v1/chat/completions", json=body)
            out.append(r.content)
            trace_id = r.headers.get("x-podium-trace-id")
            if trace_id:
                out.append(client.get(f"/v1/traces/{trace_id}").content)
        for path in ("/metrics", "/v1/models", "/healthz", "/ui/api/runs"):
            out.append(client.get(path).content)
    return out


def run_cli(env: dict[str, str], *args: str) -> list[bytes]:
    proc = subprocess.run([sys.executable, "-m", "podium", *args], capture_output=True, env=env, timeout=120)
    return [proc.stdout, proc.stderr]


def test_no_planted_key_in_anything_podium_wrote(tmp_path: Path, podium_home: Path, env: dict[str, str]) -> None:
    written: list[tuple[str, bytes]] = []
    with echo_upstream() as url:
        pool = write_pool(tmp_path, url)
        with PodiumServer(pool, podium_home, env={k: env[k] for k in PLANTED}) as server:
            written += [("http response", b) for b in drive_server(server)]
        run_ids = [row[0] for row in server.runs()]
        for args in (
            ["ask", "--pool", str(pool), "--json", QUESTION],
            ["ask", "--pool", str(pool), QUESTION],
            ["ask", "--pool", str(pool), "--coordinator", "prompted", "--json", QUESTION],
            ["traces", "ls", "--json"],
            ["traces", "show", run_ids[0], "--json"],
            ["traces", "show", run_ids[0], "--full"],
            ["traces", "export", "--format", "sft", str(tmp_path / "export.jsonl")],
            ["pool", "status", "--pool", str(pool)],
            ["pool", "status", "--pool", str(pool), "--json"],
        ):
            written += [(f"podium {' '.join(args[:2])}", b) for b in run_cli(env, *args)]
    files = [p for p in podium_home.rglob("*") if p.is_file()] + [tmp_path / "export.jsonl"]
    written += [(str(p.relative_to(p.parent.parent)), p.read_bytes()) for p in files if p.exists()]

    names = {p.name for p in podium_home.iterdir()}
    assert {"podium.db", "breakers.json", "serve.log"} <= names, names  # the files we mean to search exist
    echoed = b"".join(data for _, data in written)
    assert echoed.count(b"[REDACTED]") > 20 and b"invalid key; Authorization" in echoed  # the upstream did echo keys
    assert len(run_ids) >= 6
    hits = [
        (where, name)
        for where, data in written
        for name, key in PLANTED.items()
        if any(f in data for f in fragments(key))
    ]
    assert hits == [], f"keys found in what podium wrote: {hits[:10]}"
