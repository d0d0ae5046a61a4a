"""The learned coordinator: head files, masking, and driving the real engine on scripted models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_replay_data import MODELS, TASK_WORDS, make_dataset

from podium.cli import main
from podium.coordinators import get_coordinator
from podium.coordinators.base import RunState
from podium.coordinators.learned import LearnedCoordinator
from podium.engine import Engine
from podium.errors import UsageError
from podium.learned.head import Head, HeadFileError
from podium.learned.replay import load_replay
from podium.learned.train import TrainConfig, prepare, train_head
from podium.pool import Policy, load_pool
from podium.types import Budget, Role, RunStatus, Turn, Verdict

FAST = TrainConfig(k=16, generations=20, encoder={"name": "hashed", "dim": 512})
QUERY = {task: " ".join(words.split()[:8]) + " which one?" for task, words in TASK_WORDS.items()}
EXPECTED = dict(zip(TASK_WORDS, MODELS))  # each task's best model


@pytest.fixture(scope="module")
def head_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("learned")
    ds = load_replay(make_dataset(root / "synth"))
    head = train_head(prepare(ds, FAST, cache_root=root / "cache"), FAST, progress=None)
    return head.save(root / "head.npz")


def write_pool(folder: Path, models: list[str]) -> Path:
    """A scripted pool whose worker models carry the head's model names, plus a judge that accepts."""
    spec = {
        "name": "replay-pool",
        "models": [
            {"name": m, "backend": "scripted", "replies": [f"answer from {m}"], "roles": ["worker", "thinker"]}
            for m in models
        ]
        + [{"name": "judge", "backend": "scripted", "replies": ["ACCEPT: looks right"], "roles": ["verifier"]}],
        "defaults": {"worker": models[0], "verifier": "judge"},
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_head_save_load_round_trip(head_file: Path, tmp_path: Path) -> None:
    head = Head.load(head_file)
    again = Head.load(head.save(tmp_path / "copy"))  # .npz is appended
    assert (tmp_path / "copy.npz").is_file()
    assert again.models == head.models == MODELS
    assert np.array_equal(again.weights, head.weights) and np.array_equal(again.proj, head.proj)
    n_knn = 3 * len(again.memory.ks)  # kNN features: one per model and neighbourhood size
    assert again.weights.shape == (16 + 1 + n_knn + 3, 3 + 3)
    assert np.allclose(again.memory.emb, head.memory.emb, atol=1e-3) and again.memory.ks == head.memory.ks
    query = np.ones((2, 512), dtype=np.float32)
    assert np.allclose(again.logits(query), head.logits(query), atol=1e-3)
    meta = again.meta
    assert meta["encoder"] == {"name": "hashed", "dim": 512, "ngrams": [3, 4], "max_chars": 2000}
    assert meta["dims"] == {"encoding": 512, "projected": 16, "models": 3, "roles": 3, "knn_features": n_knn}
    assert meta["knn"]["ks"] == list(head.memory.ks)
    assert meta["training_data"]["name"] == "synth" and meta["objective"]["lambda"] == 0.0 and meta["seed"] == 0
    assert meta["optimizer"]["name"] == "sep-CMA-ES"


def test_bad_head_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(HeadFileError, match="not found"):
        Head.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(HeadFileError, match="not a podium head"):
        LearnedCoordinator.load(junk)


async def test_routes_each_task_and_masks_an_opted_out_model(head_file: Path, tmp_path: Path) -> None:
    pool = load_pool(write_pool(tmp_path, MODELS))
    coordinator = get_coordinator(f"learned:{head_file}")
    assert isinstance(coordinator, LearnedCoordinator) and coordinator.name == f"learned:{head_file}"
    for task, query in QUERY.items():
        decision = await coordinator.decide(RunState(query=query, pool=pool, budget=Budget()))
        assert decision.role == Role.WORKER and decision.model == EXPECTED[task]
    restricted = pool.restrict(Policy(exclude_models=["beta"]))
    decision = await coordinator.decide(RunState(query=QUERY["animal"], pool=restricted, budget=Budget()))
    assert decision.model in {"alpha", "gamma"}  # beta opted out: masked, no retraining


async def test_failed_model_is_not_tried_again(head_file: Path, tmp_path: Path) -> None:
    pool = load_pool(write_pool(tmp_path, MODELS))
    coordinator = LearnedCoordinator.load(head_file)
    turns = [
        Turn(turn=1, role=Role.WORKER, model="gamma", output="x"),
        Turn(turn=2, role=Role.VERIFIER, model="judge", output="REVISE", verdict=Verdict.REVISE),
    ]
    decision = await coordinator.decide(RunState(query=QUERY["space"], pool=pool, budget=Budget(), turns=turns))
    assert decision.role == Role.WORKER and decision.model != "gamma"


async def test_pool_without_any_head_model_is_a_clear_error(head_file: Path) -> None:
    coordinator = LearnedCoordinator.load(head_file)
    pool = load_pool(str(Path(__file__).parents[1] / "pools" / "scripted.yaml"))
    with pytest.raises(UsageError, match="train a head"):
        await coordinator.decide(RunState(query="hi", pool=pool, budget=Budget()))


async def test_learned_coordinator_drives_the_engine(
    head_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    engine = Engine(load_pool(write_pool(tmp_path, MODELS)), f"learned:{head_file}")
    try:
        result = await engine.run(QUERY["animal"], budget=Budget(max_turns=4))
        excluded = await engine.run(QUERY["animal"], budget=Budget(max_turns=4), policy=Policy(exclude_models=["beta"]))
    finally:
        await engine.aclose()
    assert result.status == RunStatus.ACCEPTED
    assert [(t.role, t.model) for t in result.turns] == [(Role.WORKER, "beta"), (Role.VERIFIER, "judge")]
    assert result.answer == "answer from beta" and result.coordinator == f"learned:{head_file}"
    assert excluded.status == RunStatus.ACCEPTED and "beta" not in {t.model for t in excluded.turns}


def test_podium_ask_with_learned_coordinator(
    head_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))  # traces and breakers stay in the test's folder
    pool = write_pool(tmp_path, MODELS)
    main(["ask", "--pool", str(pool), "--coordinator", f"learned:{head_file}", "--json", QUERY["space"]])
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "accepted" and data["turns"][0]["model"] == "gamma"
