"""kNN features of the learned head: leave-one-out (no label leakage), tied training, cost-capped λ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_replay_data import make_dataset

from podium.learned.cascades import shift_logits
from podium.learned.evaluate import make_items
from podium.learned.head import KnnMemory
from podium.learned.replay import load_replay
from podium.learned.routers import Routers
from podium.learned.train import TrainConfig, prepare, train_head

FAST = TrainConfig(k=16, generations=25, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))


def random_label_memory(n: int = 600, dim: int = 32, seed: int = 0) -> tuple[KnnMemory, np.ndarray, np.ndarray]:
    """A memory of ``n`` random unit vectors; exactly one of 2 models is right per item, at random."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    winner = rng.integers(0, 2, n)
    scores = np.eye(2, dtype=np.float32)[winner]
    memory = KnnMemory(
        np.zeros(dim, np.float32),
        np.eye(dim, dtype=np.float32),
        np.zeros((0, 0), np.float32),
        scores,
        np.ones_like(scores, dtype=bool),
        scores.mean(axis=0),
        ks=(1, 5),
        smooth=0.1,
    )
    memory.emb = memory.embed(emb)
    return memory, emb, winner


def test_leave_one_out_features_carry_no_label_on_random_labels() -> None:
    memory, emb, winner = random_label_memory()
    loo = memory.features(emb, self_rows=np.arange(len(emb)))
    leaky = memory.features(emb)  # the item is its own nearest neighbour
    for feats in (loo, leaky):
        assert feats.shape == (len(emb), 2 * 2) and np.isfinite(feats).all()
    accuracy = {
        name: float((np.argmax(f[:, :2], axis=1) == winner).mean()) for name, f in (("loo", loo), ("leaky", leaky))
    }
    assert accuracy["leaky"] > 0.95  # without leaving the item out, k=1 reads its own label
    assert 0.4 < accuracy["loo"] < 0.6  # left out: chance


def test_neighbours_leave_out_exactly_the_item_itself() -> None:
    memory, emb, _ = random_label_memory(n=50)
    nb = memory.neighbours(memory.embed(emb), np.arange(50))
    assert nb.shape == (50, 5)
    assert not (nb == np.arange(50)[:, None]).any()
    assert all(len(set(row)) == 5 for row in nb)


@pytest.fixture
def synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    prices = {"alpha": 20, "beta": 5, "gamma": 1}  # the best single model (alpha) is the dearest
    return load_replay(
        make_dataset(
            tmp_path / "synth",
            prices={m: {"input_usd_per_mtok": usd, "output_usd_per_mtok": usd} for m, usd in prices.items()},
        )
    )


def test_knn_head_routes_each_task_and_its_weights_are_tied(synth) -> None:
    prep = prepare(synth, FAST)
    head = train_head(prep, FAST, progress=None)
    test = synth.indices("test")
    items = make_items(synth, test)
    score = items.pick(head.choose(prep.emb[test], items.known))[0].mean()
    assert score > items.scores.mean(axis=0).max() + 0.3
    n_z, m = head.k + 1, head.n_models
    for j in range(len(FAST.knn_ks)):  # each model's logit reads only its own kNN rate
        block = head.weights[n_z + j * m : n_z + (j + 1) * m, :m]
        assert np.allclose(block, np.diag(np.diag(block)))
    assert tuple(head.meta["config"]["knn_ks"]) == (5, 20)


def test_cost_shift_buys_cheaper_models(synth) -> None:
    prep = prepare(synth, FAST)
    r = Routers(prep, FAST, None)
    val = make_items(synth, prep.val_rows)
    self_rows = prep.self_rows(prep.val_rows)
    emb = prep.emb[prep.val_rows]
    uncapped = val.pick(r.head(0.0).choose(emb, val.known, self_rows=self_rows))[1].mean()
    cheaper = val.pick(shift_logits(r.head(0.0), r.cost_by_model, 3.0).choose(emb, val.known, self_rows=self_rows))[
        1
    ].mean()
    assert cheaper < uncapped  # lowering each logit by its model's cost buys cheaper models
