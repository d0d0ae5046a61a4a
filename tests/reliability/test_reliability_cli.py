"""Through the real CLI (a subprocess): a dead first provider falls back, and a cost budget smaller
than one call ends cleanly with status budget_exhausted and exit code 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import free_port
from faults.helpers import MAIN_PRICE, model
from faults.server import DEFAULT_REPLY, FaultServer


def write_pool(path: Path, fault_server: FaultServer, main_url: str) -> Path:
    dead = {**model("main", main_url, "ok", fallbacks=["backup"], **MAIN_PRICE), "max_retries": 2}
    config = {
        "name": "cli-faults",
        "models": [
            model("planner", fault_server.url, "ok/plan", roles=["thinker"]),
            dead,
            model("backup", fault_server.url, "ok/backup", **MAIN_PRICE),
            model("judge", fault_server.url, "ok/judge", extra_body={"reply": "ACCEPT: correct"}, roles=["verifier"]),
        ],
        "defaults": {"thinker": "planner", "worker": "main", "verifier": "judge"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def podium(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PODIUM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "podium", *args], capture_output=True, text=True, env=env, timeout=60)


def test_dead_first_model_falls_back_and_trace_shows_it(tmp_path: Path, fault_server: FaultServer) -> None:
    dead_port = free_port()  # nothing listens there: connection refused
    pool = write_pool(tmp_path / "pool.yaml", fault_server, f"http://127.0.0.1:{dead_port}/v1")
    out = podium("ask", "--pool", str(pool), "--json", "What is six times seven?", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "accepted" and data["answer"] == DEFAULT_REPLY
    worker = [t for t in data["turns"] if t["role"] == "worker"][0]
    assert worker["model"] == "backup" and worker["fallback_from"] == "main" and worker["retries"] == 2
    assert len(worker["attempts"]) == 3
    assert all(a.startswith("main: cannot reach") and str(dead_port) in a for a in worker["attempts"])
    assert "Traceback" not in out.stderr


def test_max_cost_below_one_call_is_budget_exhausted_with_exit_0(tmp_path: Path, fault_server: FaultServer) -> None:
    pool = write_pool(tmp_path / "pool.yaml", fault_server, fault_server.url)
    out = podium(
        "ask",
        "--pool",
        str(pool),
        "--json",
        "--coordinator",
        "fixed:main",
        "--max-cost",
        "0.0000001",
        "What is six times seven?",
        home=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "budget_exhausted" and data["reason"].startswith("max_cost_usd")
    assert data["answer"] is None and data["cost_usd"] == 0
    assert fault_server.requests_for("ok") == 0
