"""The per-request cost knob (continuous, in one head file) and RouteLLM's metrics on a strong/weak pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_replay_data import make_dataset

from podium.coordinators import get_coordinator, split_cost_weight
from podium.errors import UsageError
from podium.learned.head import Head
from podium.learned.knob import LAMBDA_GRID, lambda_for
from podium.learned.replay import load_replay
from podium.learned.routellm import pair_dataset, pgr_curve, pick_pair, routellm_metrics
from podium.learned.routers import Routers
from podium.learned.train import TrainConfig, prepare

FAST = TrainConfig(k=16, generations=15, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))


@pytest.fixture
def priced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    prices = {"alpha": 100.0, "beta": 50.0, "gamma": 1.0}  # strong (alpha) ~100x the weak one (gamma)
    return load_replay(
        make_dataset(
            tmp_path / "p",
            per_task=60,
            prices={m: {"input_usd_per_mtok": u, "output_usd_per_mtok": u} for m, u in prices.items()},
        )
    )


def test_knob_moves_the_strong_share_gradually_on_a_100x_pair(priced, tmp_path: Path) -> None:
    prep = prepare(priced, FAST)
    strong, weak = pick_pair(prep)
    assert (priced.models[strong], priced.models[weak]) == ("alpha", "gamma")
    sub, _ = pair_dataset(priced, strong, weak)
    sub_prep = prepare(sub, FAST, emb=prep.emb[_])
    head = Routers(sub_prep, FAST, None).safe_head()
    path = head.save(tmp_path / "knob.npz")
    head = Head.load(path)  # the whole sweep lives in the one file
    assert len(head.meta["knob"]["points"]) == len(LAMBDA_GRID)
    test = sub.indices("test")
    shares = [
        float((head.choose(sub_prep.emb[test], sub.known[test], cost_weight=w) == 0).mean())
        for w in np.linspace(0, 1, 21)
    ]
    assert all(b <= a + 1e-9 for a, b in zip(shares, shares[1:]))  # dearer calls never come back as w grows
    assert shares[0] > 0.5 and shares[-1] < 0.05
    assert any(0.15 < s < shares[0] - 0.15 for s in shares)  # an operating point between all-strong and all-weak
    assert lambda_for(head.meta["knob"], 0.0) == 0.0
    lams = [lambda_for(head.meta["knob"], w) for w in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert all(b >= a for a, b in zip(lams, lams[1:]))
    with pytest.raises(UsageError):
        head.choose(sub_prep.emb[test[:1]], cost_weight=1.5)


def test_cost_weight_in_the_coordinator_name(priced, tmp_path: Path) -> None:
    prep = prepare(priced, FAST)
    path = Routers(prep, FAST, None).safe_head().save(tmp_path / "h.npz")
    assert split_cost_weight(f"{path}@0.3") == (str(path), 0.3)
    assert split_cost_weight("a@b/head.npz") == ("a@b/head.npz", 0.0)
    coordinator = get_coordinator(f"learned:{path}@0.3")
    assert coordinator.cost_weight == 0.3 and coordinator.with_cost_weight(0.9).cost_weight == 0.9
    with pytest.raises(UsageError):
        get_coordinator(f"learned:{path}@2")


def test_pgr_apgr_and_cpt_on_a_known_example() -> None:
    strong = np.array([1.0, 1.0, 1.0, 0.0])
    weak = np.array([0.0, 0.0, 1.0, 0.0])
    perfect = pgr_curve(np.array([3.0, 2.0, 1.0, 0.0]), strong, weak)
    assert perfect["cpt50"] == pytest.approx(0.14) and perfect["cpt80"] == pytest.approx(
        0.38
    )  # 1 and 2 of 4 items (rounded)
    worst = pgr_curve(np.array([0.0, 1.0, 2.0, 3.0]), strong, weak)
    assert perfect["apgr"] > 0.7 > 0.3 > worst["apgr"]
    assert perfect["pgr"][0] == 0.0 and perfect["pgr"][-1] == pytest.approx(1.0)


def test_routellm_metrics_on_the_pair(priced) -> None:
    prep = prepare(priced, FAST)
    out = routellm_metrics(priced, prep, FAST, folds=3)
    assert out["strong"] == "alpha" and out["weak"] == "gamma" and out["cost_ratio"] > 50
    assert out["curves"]["learned"]["apgr"] > out["curves"]["random"]["apgr"]
    assert out["knob"][0]["cost_weight"] == 0.0 and out["knob"][-1]["strong_share"] < 0.05


async def test_server_takes_the_cost_weight_from_the_body_and_the_model_name(priced, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")
    import httpx
    import yaml

    from podium.server.app import create_app
    from podium.server.traces import Traces

    head = Routers(prepare(priced, FAST), FAST, None).safe_head().save(tmp_path / "router.npz")
    models = ["alpha", "beta", "gamma"]
    pool = {
        "name": "knob-pool",
        "models": [
            {"name": m, "backend": "scripted", "replies": [f"answer from {m}"], "roles": ["worker"]} for m in models
        ],
        "defaults": {"worker": "alpha"},
    }
    tiers = {
        "tiers": [
            {"name": "router", "coordinator": f"learned:{head}", "max_turns": 1, "roles": ["worker"]},
            {"name": "plain", "coordinator": "rules", "max_turns": 1, "roles": ["worker"]},
        ]
    }
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    (tmp_path / "tiers.yaml").write_text(yaml.safe_dump(tiers))
    app = create_app(str(tmp_path / "pool.yaml"), tiers=tmp_path / "tiers.yaml", traces=Traces(tmp_path / "t.db"))
    fruit = [{"role": "user", "content": "apple banana cherry grape mango peach plum kiwi which one?"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:

        async def answer(model: str, **extra) -> str:
            response = await client.post("/v1/chat/completions", json={"model": model, "messages": fruit, **extra})
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

        assert await answer("router") == "answer from alpha"  # quality: alpha is the best on fruit
        assert await answer("router@1") == "answer from gamma"  # cost: the cheapest
        assert await answer("router", podium={"cost_weight": 1.0}) == "answer from gamma"
        assert await answer("router@1", podium={"cost_weight": 0.0}) == "answer from alpha"  # the body wins
        bad = await client.post("/v1/chat/completions", json={"model": "plain@0.5", "messages": fruit})
        assert bad.status_code == 400 and "no cost knob" in bad.text
        bad = await client.post(
            "/v1/chat/completions", json={"model": "router", "messages": fruit, "podium": {"cost_weight": 3}}
        )
        assert bad.status_code == 400
