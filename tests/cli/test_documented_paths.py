"""Documented paths work on a fresh clone: the example pool file, the shipped replay dataset and
its scripted pool (the learned-coordinator quickstart end to end), and export -> train from a
user's own runs with the number of runs it takes. Real `podium` subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import POOLS, REPO
from podium.engine import Engine
from podium.pool import load_pool
from podium.traces.store import recorder

EXAMPLE_POOL = str(REPO / "examples" / "pool.yaml")


def podium(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_example_pool_file_is_valid_and_checked() -> None:
    proc = podium("models", "--pool", EXAMPLE_POOL, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {m["name"] for m in json.loads(proc.stdout)} == {"local-qwen", "qwen3-235b", "mistral-medium-3"}
    check = podium("pool", "check", "--pool", EXAMPLE_POOL, env={"OPENROUTER_API_KEY": ""})
    assert check.returncode == 1 and "OPENROUTER_API_KEY is not set" in check.stdout and "Traceback" not in check.stderr


def test_shipped_dataset_matches_the_shipped_scripted_pool() -> None:
    pytest.importorskip("pyarrow", reason="replay datasets need the train extra")
    from podium.learned.replay import load_replay, shipped_datasets

    assert "example" in shipped_datasets()
    ds = load_replay("example")
    assert len(ds.texts) >= 200 and set(ds.splits) == {"train", "test"}
    pool = load_pool("replay-example")
    assert set(ds.models) == set(pool.candidates("worker"))


def test_learned_coordinator_quickstart_end_to_end(tmp_path: Path) -> None:
    head = tmp_path / "head.npz"
    trained = podium("train", "replay", "example", "--out", str(head), "--generations", "8", "--quiet")
    assert trained.returncode == 0, trained.stderr
    proc = podium("ask", "--pool", "replay-example", "--coordinator", f"learned:{head}", "--json", "What is 12 * 7?")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["status"] == "accepted" and run["turns"][-1]["model"] == "judge"
    assert run["turns"][0]["model"] in {"math-solver", "code-writer", "polyglot", "generalist"}
    other = podium("ask", "--pool", str(POOLS / "scripted.yaml"), "--coordinator", f"learned:{head}", "hi")
    assert (
        other.returncode == 2 and "trained for models" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    )


async def record_runs(questions: list[str]) -> None:
    engine = Engine(load_pool(str(POOLS / "scripted.yaml")), "rules")
    try:
        for q in questions:
            await engine.run(q, on_event=recorder("test"))
    finally:
        await engine.aclose()


def test_export_then_train_needs_about_fifteen_runs(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="export --format replay needs the train extra")
    asyncio.run(record_runs([f"question number {i}?" for i in range(3)]))
    few = podium("traces", "export", "--format", "replay", str(tmp_path / "few"))
    assert few.returncode == 0 and "needs at least 10 train items" in few.stderr
    refused = podium("train", "replay", str(tmp_path / "few"), "--out", str(tmp_path / "h.npz"))
    assert refused.returncode == 2 and "about 15 distinct questions" in refused.stderr
    asyncio.run(record_runs([f"question number {i}?" for i in range(3, 18)]))
    enough = podium("traces", "export", "--format", "replay", str(tmp_path / "enough"))
    assert enough.returncode == 0 and "wrote 18 items" in enough.stdout and "needs at least" not in enough.stderr, (
        enough.stderr
    )
    trained = podium(
        "train", "replay", str(tmp_path / "enough"), "--out", str(tmp_path / "h.npz"), "--generations", "3", "--quiet"
    )
    assert trained.returncode == 0, trained.stderr
