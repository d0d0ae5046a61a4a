"""The CLI as a user runs it: a real subprocess, checking output, exit codes and the absence of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import POOLS, free_port

SCRIPTED = str(POOLS / "scripted.yaml")


def podium(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_ask_json_shape() -> None:
    proc = podium("ask", "--pool", SCRIPTED, "--json", "What is 17 * 23?")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "391" and data["status"] == "accepted"
    assert [t["role"] for t in data["turns"]] == ["thinker", "worker", "verifier"]
    keys = {"turn", "role", "model", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "verdict"}
    assert all(keys <= set(t) for t in data["turns"])
    assert data["trace_id"].startswith("run_")


def test_ask_reads_stdin_and_prints_table() -> None:
    proc = podium("ask", "--pool", SCRIPTED, stdin="What is 17 * 23?\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("391")
    assert "thinker" in proc.stdout and "verifier" in proc.stdout and "status: accepted" in proc.stdout


def test_models_lists_prices_and_roles() -> None:
    proc = podium("models", "--pool", "openrouter")
    assert proc.returncode == 0
    assert "qwen3-235b-a22b" in proc.stdout and "0.130" in proc.stdout and "coordinator" in proc.stdout


@pytest.mark.parametrize("pool", ["embedded", "ollama", "openrouter", "eu"])
def test_shipped_pools_parse(pool: str) -> None:
    proc = podium("models", "--pool", pool, "--json")
    assert proc.returncode == 0, proc.stderr
    models = json.loads(proc.stdout)
    assert models
    if pool == "eu":
        assert {m["region"] for m in models} == {"eu"}


def test_empty_question() -> None:
    assert_clean_error(podium("ask", "--pool", SCRIPTED, "   "), 2, "empty")


def test_missing_pool_file() -> None:
    assert_clean_error(
        podium("ask", "--pool", "/nonexistent/pool.yaml", "hi"), 2, "/nonexistent/pool.yaml", "not found"
    )


def test_unknown_pool_name() -> None:
    assert_clean_error(podium("models", "--pool", "nosuchpool"), 2, "unknown pool 'nosuchpool'", "embedded")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    return str(path)


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nmodels:\n  - name: a\n    backend: scripted\n    colour: red\n")
    assert_clean_error(podium("ask", "--pool", path, "hi"), 2, path, "models.0.colour", "unknown key")


def test_role_naming_unknown_model(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nmodels:\n  - name: a\n    backend: scripted\ndefaults:\n  worker: ghost\n")
    assert_clean_error(podium("ask", "--pool", path, "hi"), 2, path, "defaults.worker", "ghost")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "name: [unclosed\n")
    assert_clean_error(podium("models", "--pool", path), 2, "not valid YAML")


def dead_pool(tmp_path: Path) -> str:
    port = free_port()  # nothing listens there
    return write(
        tmp_path,
        f"""name: dead
models:
  - name: gone
    backend: openai
    base_url: http://127.0.0.1:{port}/v1
    model: x
    max_retries: 0
    connect_timeout_s: 1
""",
    )


def test_unreachable_endpoint_ask_fails_cleanly(tmp_path: Path) -> None:
    proc = podium("ask", "--pool", dead_pool(tmp_path), "--json", "hi")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "failed" and "cannot reach" in data["turns"][0]["error"]


def test_pool_check_reports_unreachable(tmp_path: Path) -> None:
    proc = podium("pool", "check", "--pool", dead_pool(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "valid" in proc.stdout and "FAIL gone" in proc.stdout and "cannot reach" in proc.stdout


def test_unknown_coordinator() -> None:
    assert_clean_error(podium("ask", "--pool", SCRIPTED, "--coordinator", "magic", "hi"), 2, "unknown coordinator")


def test_bad_flag_value() -> None:
    proc = podium("ask", "--max-turns", "zero", "hi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "max-turns" in proc.stderr


def test_bad_prompt_template_field(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nmodels:\n  - name: a\n    backend: scripted\nprompts:\n  worker: 'Do {task}'\n")
    assert_clean_error(podium("models", "--pool", path), 2, "prompts.worker", "task")


def test_pool_budget_is_the_default_and_flags_override(tmp_path: Path) -> None:
    text = (POOLS / "scripted.yaml").read_text().replace("models:", "budget:\n  max_turns: 2\nmodels:", 1)
    path = write(tmp_path, text)
    data = json.loads(podium("ask", "--pool", path, "--json", "q").stdout)
    assert [t["role"] for t in data["turns"]] == ["worker", "verifier"]  # two turns: no room to plan
    data = json.loads(podium("ask", "--pool", path, "--json", "--max-turns", "3", "q").stdout)
    assert [t["role"] for t in data["turns"]] == ["thinker", "worker", "verifier"]


def test_ask_with_a_check_verifies_by_the_check() -> None:
    proc = podium(
        "ask", "--pool", SCRIPTED, "--json", "--check", '{"type": "number", "answer": 391}', "What is 17 * 23?"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "accepted" and out["turns"][-1]["model"] == "check" and out["turns"][-1]["cost_usd"] == 0


@pytest.mark.parametrize("bad", ['{"type": "number"}', "not json", '{"type": "sql"}'])
def test_ask_rejects_a_bad_check_in_one_line(bad: str) -> None:
    proc = podium("ask", "--pool", SCRIPTED, "--check", bad, "q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--check" in proc.stderr
