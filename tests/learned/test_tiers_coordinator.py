"""Complexity tiers (``tiers:PATH@W``): a cheap and a strong model per role, switched on predicted difficulty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_replay_data import TASK_WORDS, make_dataset

from podium.coordinators import get_coordinator
from podium.coordinators.base import RunState
from podium.coordinators.tiers import TiersCoordinator
from podium.engine import Engine
from podium.errors import UsageError
from podium.learned.replay import load_replay
from podium.learned.routers import Routers
from podium.learned.train import TrainConfig, prepare, train_head
from podium.pool import Policy, load_pool
from podium.types import Budget, Role, RunStatus

FAST = TrainConfig(k=16, generations=15, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))
PRICES = {"alpha": 100.0, "beta": 50.0, "gamma": 1.0}  # alpha: best overall and dearest; gamma: cheapest
WEIGHTS = [float(w) for w in np.linspace(0, 1, 11)]


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("tiers")
    prices = {m: {"input_usd_per_mtok": u, "output_usd_per_mtok": u} for m, u in PRICES.items()}
    ds = load_replay(make_dataset(root / "priced", per_task=60, prices=prices))
    prep = prepare(ds, FAST, cache_root=root / "cache")
    return Routers(prep, FAST, None).safe_head().save(root / "head.npz"), ds


def write_pool(folder: Path) -> Path:
    spec = {
        "name": "tiers-pool",
        "models": [
            {"name": m, "backend": "scripted", "replies": [f"answer from {m}"], "roles": ["worker"]} for m in PRICES
        ]
        + [{"name": "judge", "backend": "scripted", "replies": ["ACCEPT: fine"], "roles": ["verifier"]}],
        "defaults": {"worker": "alpha", "verifier": "judge"},
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


async def decide_all(coordinator: TiersCoordinator, pool, texts: list[str]) -> list[str]:
    return [(await coordinator.decide(RunState(query=t, pool=pool, budget=Budget()))).model for t in texts]


async def test_easy_items_go_to_the_cheap_model_and_hard_ones_to_the_strong_one(tiered, tmp_path: Path) -> None:
    head_file, ds = tiered
    pool = load_pool(write_pool(tmp_path))
    test = ds.indices("test")
    by_task = {task: [ds.texts[i] for i in test if ds.tasks[i] == task] for task in TASK_WORDS}
    gamma_task, alpha_task = list(TASK_WORDS)[2], list(TASK_WORDS)[0]  # gamma is right on the third task only
    coordinator = get_coordinator(f"tiers:{head_file}@0.1")
    assert isinstance(coordinator, TiersCoordinator) and coordinator.name == f"tiers:{head_file}"
    easy = await decide_all(coordinator, pool, by_task[gamma_task])
    hard = await decide_all(coordinator, pool, by_task[alpha_task])
    assert set(easy) | set(hard) <= {"alpha", "gamma"}  # only the two tiers: beta is neither cheapest nor best
    assert easy.count("gamma") / len(easy) >= 0.8  # the cheap model is predicted as good here
    assert hard.count("alpha") / len(hard) >= 0.8  # the cheap model is predicted to fail here
    decision = await coordinator.decide(RunState(query=by_task[alpha_task][0], pool=pool, budget=Budget()))
    assert decision.role == Role.WORKER and "predicted difficulty" in decision.reason and "strong" in decision.reason


async def test_threshold_moves_the_strong_share_monotonically(tiered, tmp_path: Path) -> None:
    head_file, ds = tiered
    pool = load_pool(write_pool(tmp_path))
    texts = [ds.texts[i] for i in ds.indices("test")]
    base = TiersCoordinator.load(head_file)
    shares = []
    for w in WEIGHTS:
        models = await decide_all(base.with_cost_weight(w), pool, texts)
        shares.append(models.count("alpha") / len(models))
    assert all(b <= a + 1e-9 for a, b in zip(shares, shares[1:]))  # the strong share never comes back
    assert shares[0] > 0.5 and shares[-1] < 0.05
    assert any(0.1 < s < shares[0] - 0.1 for s in shares)  # operating points between the extremes


async def test_tiers_follow_the_pool_and_drive_the_engine(tiered, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    head_file, ds = tiered
    hard = next(ds.texts[i] for i in ds.indices("test") if ds.tasks[i] == list(TASK_WORDS)[0])
    pool = load_pool(write_pool(tmp_path))
    coordinator = TiersCoordinator.load(head_file, 0.1)
    without_alpha = pool.restrict(Policy(exclude_models=["alpha"]))  # the strong tier is now beta
    decision = await coordinator.decide(RunState(query=hard, pool=without_alpha, budget=Budget()))
    assert decision.model in {"beta", "gamma"}
    engine = Engine(pool, f"tiers:{head_file}@0.1")
    try:
        result = await engine.run(hard, budget=Budget(max_turns=3))
    finally:
        await engine.aclose()
    assert result.status == RunStatus.ACCEPTED and result.turns[0].model == "alpha"
    assert result.coordinator == f"tiers:{head_file}"


def test_tiers_need_a_head_with_a_knob(tiered, tmp_path: Path) -> None:
    head_file, ds = tiered
    plain = train_head(prepare(ds, FAST), FAST, progress=None).save(tmp_path / "plain.npz")  # no gate, no knob
    with pytest.raises(UsageError, match="cost knob"):
        get_coordinator(f"tiers:{plain}")
    with pytest.raises(UsageError, match="head file"):
        get_coordinator("tiers")
    with pytest.raises(UsageError):
        get_coordinator(f"tiers:{head_file}@1.5")
