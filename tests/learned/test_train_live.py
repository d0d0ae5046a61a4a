"""``podium train live`` on a scripted pool with a known optimum (see bench_fakes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench_fakes import arith_tasks, write_arith_pool
from podium.backends.cached import CachingBackendSet
from podium.learned.live import LiveConfig, train_live
from podium.pool import load_pool
from podium.tasks import parse_record
from podium.types import ChatMessage, CompletionRequest

LAM = 0.1
# optimum: sums -> w_add then the verifier (2 calls); products -> planner, w_gen, verifier (3 calls);
# every answer right: mean reward 1 - LAM * 2.5. The rules coordinator gets only the products right.
OPTIMUM = 1 - LAM * 2.5


def ask(cli, pool: str, head: Path, question: str) -> dict:
    from podium.cli import main

    return json.loads(cli(main, ["ask", "--pool", pool, "--coordinator", f"learned:{head}", "--json", question]))


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    def run(main, args: list[str]) -> str:
        capsys.readouterr()
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code == 0, capsys.readouterr().err
        return capsys.readouterr().out

    return run


def test_train_live_finds_the_optimum_and_learns_roles(tmp_path: Path, run_cli) -> None:
    pool_path = write_arith_pool(tmp_path)
    tasks_path = tmp_path / "arith.jsonl"
    tasks_path.write_text("".join(json.dumps(r) + "\n" for r in arith_tasks(6)))
    head = tmp_path / "head.npz"
    out = run_cli(
        __import__("podium.cli", fromlist=["main"]).main,
        [
            "train",
            "live",
            str(tasks_path),
            "--pool",
            pool_path,
            "--out",
            str(head),
            "--generations",
            "20",
            "--lam",
            str(LAM),
            "--quiet",
        ],
    )
    report = json.loads(out)
    rules, trained = report["rules"], report["trained"]
    assert rules["accuracy"] == 0.5  # products only
    assert trained["accuracy"] == 1.0
    assert trained["reward"] == pytest.approx(OPTIMUM) and trained["calls_per_item"] == pytest.approx(2.5)
    assert trained["reward"] > rules["reward"]
    assert report["cache_hits"] > 10 * report["paid_calls"]  # repeated rollouts are served from the cache

    # the saved head drives the real engine: a thinker on products only, the right worker per family
    product = ask(run_cli, pool_path, head, "Product task. What is 11 times 13? Multiply them.")
    assert [(t["role"], t["model"]) for t in product["turns"]] == [
        ("thinker", "planner"),
        ("worker", "w_gen"),
        ("verifier", "v_noisy"),
    ]
    total = ask(run_cli, pool_path, head, "Addition task. What is 11 plus 13? Add the numbers.")
    assert [(t["role"], t["model"]) for t in total["turns"]] == [("worker", "w_add"), ("verifier", "v_noisy")]
    assert product["answer"] == "143" and total["answer"] == "24"


def test_budget_caps_training_and_checkpoint_resumes(tmp_path: Path) -> None:
    pool = load_pool(write_arith_pool(tmp_path))
    tasks = [parse_record(r) for r in arith_tasks(4)]
    head, report = asyncio.run(train_live(pool, tasks, LiveConfig(generations=10, lam=LAM, max_calls=40)))
    assert report["stopped"] and "max_calls" in report["stopped"] and report["paid_calls"] <= 40
    assert report["generations"] < 10

    ckpt = tmp_path / "live.ckpt"
    config = LiveConfig(generations=2, lam=LAM)
    _, first = asyncio.run(train_live(pool, tasks, config, checkpoint=ckpt))
    assert first["generations"] == 2 and ckpt.is_file()
    more = LiveConfig(generations=2, lam=LAM)
    _, again = asyncio.run(train_live(pool, tasks, more, checkpoint=ckpt, resume=True))
    assert again["generations"] == 2 and again["paid_calls"] == 0  # nothing left to do, nothing re-paid


def test_response_cache_keys_on_model_messages_and_sampling(tmp_path: Path) -> None:
    pool = load_pool(write_arith_pool(tmp_path))
    backends = CachingBackendSet()
    w = backends.get(pool.get("w_add"))
    req = CompletionRequest(messages=[ChatMessage(role="user", content="What is 2 plus 3?")], max_tokens=10)

    async def go() -> list[str]:
        a = await w.complete(req)
        b = await w.complete(req)
        c = await w.complete(req.model_copy(update={"temperature": 0.7}))
        d = await backends.get(pool.get("w_gen")).complete(req)
        return [a.text, b.text, c.text, d.text]

    texts = asyncio.run(go())
    assert texts == ["5", "5", "5", "6"]
    assert backends.hits == 1 and backends.misses == 3
