"""Safe routing: CV + paired bootstrap selection, the fallback gate, simulated verifiers, baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_replay_data import MODELS, make_dataset

from podium.learned.cascades import Items, cascade_order
from podium.learned.crossval import Candidate, first_available, kfold, select_safe
from podium.learned.evaluate import evaluate_dataset
from podium.learned.head import Gate, Head
from podium.learned.replay import load_replay
from podium.learned.routers import Routers
from podium.learned.simulated_verifier import PERFECT, Verifier, accept_matrix
from podium.learned.stats import interval, lower_bound, paired_interval
from podium.learned.train import TrainConfig, prepare

FAST = TrainConfig(k=16, generations=15, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))


@pytest.fixture
def synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    return load_replay(make_dataset(tmp_path / "synth", per_task=60))


def randomise(ds, seed: int = 3):
    """Scores independent of the text: model 0 right 65%, model 1 50%, model 2 35%."""
    rng = np.random.default_rng(seed)
    ds.scores = (rng.random(ds.scores.shape) < np.array([0.65, 0.5, 0.35])).astype(float)
    return ds


def test_random_labels_fall_back_to_the_best_single_model(synth) -> None:
    ds = randomise(synth)
    result = evaluate_dataset(ds, FAST, lambdas=(0.0,), progress=None, extras=False)
    r = result["_routers"]
    test = ds.indices("test")
    fallback = first_available(r.best_order, ds.known[test])
    for name in ("learned", "learned@cap"):
        assert result["cv"][name]["deviates"] is False, result["cv"][name]
    for name, head in (("learned", r.safe_head()),):
        assert not np.isfinite(head.gate.margin)
        assert np.array_equal(head.choose(r.prep.emb[test], ds.known[test]), fallback)  # no deviation at all
    methods = {m["method"]: m for m in result["methods"]}
    assert methods["learned"]["score"] == methods["best_single"]["score"]
    assert methods["learned@cap"]["score"] == methods["best_single"]["score"]
    assert (
        methods["learned_cascade@3 cap"]["score"] == methods["best_single"]["score"]
    )  # uniform cost: no cascade fits the cap
    assert r.best_order[0] == 0


def test_real_signal_passes_validation_and_keeps_the_gain(synth) -> None:
    result = evaluate_dataset(synth, FAST, lambdas=(0.0,), progress=None, extras=False)
    methods = {m["method"]: m for m in result["methods"]}
    assert result["cv"]["learned"]["deviates"] is True
    assert result["cv"]["learned"]["cv_gain_lower"] > 0
    assert methods["learned"]["score"] > methods["best_single"]["score"] + 0.2
    assert methods["learned"]["delta_ci"][0] > 0  # paired interval excludes 0
    lo, hi = methods["learned"]["score_ci"]
    assert lo <= methods["learned"]["score"] <= hi
    for name in ("per_task", "mf", "cascade_best_then_second@2", "learned_cascade@3 [perfect]", "learned_cascade@3"):
        assert name in methods
    assert methods["mf"]["score"] > methods["best_single"]["score"] + 0.15
    assert methods["per_task"]["gap_closed"] > 0.8  # tasks decide the winner in this data


def test_select_safe_needs_a_gain_that_survives_bonferroni() -> None:
    rng = np.random.default_rng(0)
    n = 400
    fallback = Candidate("fallback", (rng.random(n) < 0.6).astype(float), np.ones(n))
    noise = [
        Candidate(f"c{i}", np.where(rng.random(n) < 0.9, fallback.scores, 1 - fallback.scores), np.ones(n))
        for i in range(100)
    ]
    sel = select_safe(noise, fallback)
    assert not sel.deviates and sel.chosen is fallback and sel.n_candidates == 100
    better = Candidate("better", np.maximum(fallback.scores, (rng.random(n) < 0.5).astype(float)), np.ones(n))
    sel = select_safe([*noise, better], fallback)
    assert sel.deviates and sel.chosen is better and sel.lower > 0
    assert not select_safe([better], fallback, cost_cap=0.5).deviates  # over the cost cap


def test_bootstrap_intervals_cover_and_pair() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(2000) < 0.7).astype(float)
    lo, hi = interval(a)
    assert lo < 0.7 < hi and hi - lo < 0.06
    b = np.where(rng.random(2000) < 0.05, 1 - a, a)
    plo, phi = paired_interval(a, b)
    assert phi - plo < hi - lo  # pairing removes the shared item difficulty
    assert lower_bound(np.full(50, 0.1), 0.001) == pytest.approx(0.1)


def test_kfold_partitions_train_rows() -> None:
    rows = np.arange(100, 153)
    folds = kfold(rows, 5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held) == list(rows)
    for rows_in, h in folds:
        assert not set(rows_in) & set(h) and len(rows_in) + len(h) == len(rows)


def test_simulated_verifier_rates_and_stable_draws() -> None:
    scores = np.tile([[1.0, 0.0]], (20000, 1))
    v = Verifier(false_accept=0.2, false_reject=0.1, seed=4)
    acc = accept_matrix(scores, v)
    assert abs(acc[:, 0].mean() - 0.9) < 0.01 and abs(acc[:, 1].mean() - 0.2) < 0.01
    rows = np.arange(20000)
    assert np.array_equal(accept_matrix(scores[500:900], v, rows[500:900]), acc[500:900])  # same item, same verdict
    assert np.array_equal(accept_matrix(scores, PERFECT), scores >= 0.5)
    assert v.accuracy == pytest.approx(0.85) and "FA=0.2" in v.label and "upper bound" in PERFECT.label
    with pytest.raises(ValueError):
        Verifier(false_accept=1.5)


def test_cascade_stops_on_the_verifier_not_on_the_score() -> None:
    scores = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    items = Items(scores, np.ones_like(scores, dtype=bool), np.ones_like(scores), np.arange(2))
    order = np.array([0, 1, 2])
    final, spent, calls = cascade_order(order, items, 3)  # perfect: stops at the first right answer
    assert list(calls) == [2, 1] and list(final) == [1.0, 1.0]
    accept_all = np.ones_like(scores, dtype=bool)  # a verifier that accepts everything: one call, wrong answers kept
    final, _, calls = cascade_order(order, items, 3, accept_all)
    assert list(calls) == [1, 1] and list(final) == [0.0, 1.0]
    reject_all = ~accept_all  # rejects everything: all turns used, the last answer stands
    final, spent, calls = cascade_order(order, items, 3, reject_all)
    assert list(calls) == [3, 3] and list(final) == [1.0, 0.0] and list(spent) == [3, 3]


def test_gate_falls_back_and_survives_save_and_load(tmp_path: Path) -> None:
    head = Head(
        MODELS,
        {"name": "hashed", "dim": 16},
        np.zeros(16, np.float32),
        np.eye(16, 2, dtype=np.float32),
        np.zeros((2 + 1 + 3, 6)),
    )
    logits = np.array([[0.2, 0.5, 0.1], [0.2, 0.21, 0.1]])
    gate = Gate(np.array([0, 1, 2]), 0.05)
    assert list(gate.apply(logits, None)) == [1, 0]  # 0.3 beats the margin, 0.01 does not
    avail = np.array([[False, True, True], [False, True, True]])
    assert list(gate.apply(logits, avail)) == [1, 1]  # fallback unavailable: the next one in the order
    assert list(Gate(np.array([2, 0, 1]), np.inf).apply(logits, None)) == [2, 2]
    head.gate = Gate(np.array([2, 0, 1]), np.inf, {"selection": {"deviates": False}})
    loaded = Head.load(head.save(tmp_path / "h.npz"))
    assert list(loaded.gate.order) == [2, 0, 1] and not np.isfinite(loaded.gate.margin)
    assert loaded.gate.info["selection"] == {"deviates": False}
    assert list(loaded.choose(np.zeros((2, 16), np.float32))) == [2, 2]


def test_capped_selection_keeps_cv_cost_within_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    prices = {"alpha": 20, "beta": 5, "gamma": 1}  # the best single model (alpha) is the dearest
    ds = load_replay(
        make_dataset(
            tmp_path / "p",
            per_task=60,
            prices={m: {"input_usd_per_mtok": u, "output_usd_per_mtok": u} for m, u in prices.items()},
        )
    )
    r = Routers(prepare(ds, FAST), FAST, None)
    head = r.safe_head((0.0, 1.0), (0.0, 0.3), cap=True)
    sel = head.gate.info["selection"]
    assert sel["deviates"]
    fh = r.fold_heads((0.0, 1.0))
    from podium.learned.crossval import fold_fallback, single_candidates

    chosen = [c for c in single_candidates(r.prep, fh, (0.0, 1.0), (0.0, 0.3)) if c.name == sel["chosen"]][0]
    assert chosen.costs.mean() <= fold_fallback(r.prep, fh).costs.mean()


def test_memoised_mf_and_logistic_predictions_equal_a_fresh_computation(synth) -> None:
    """The λ sweep asks both routers about the same rows again: a hit is the computation on equal rows."""
    from podium.learned import routers as routers_mod
    from podium.learned.baselines import predict_logistic, predict_mf

    r = Routers(prepare(synth, TrainConfig(generations=2)), TrainConfig(generations=2), None, folds=3)
    emb = r.prep.emb[synth.indices("test")]
    routers_mod.PREDICTIONS.clear()
    mf, logistic = r.mf_scores(emb), r.logistic_scores(emb)
    assert r.mf_scores(emb.copy()) is mf and r.logistic_scores(emb.copy()) is logistic  # hits by content
    assert mf.tobytes() == predict_mf(r.mf_params, r.mf_input(emb)).tobytes()
    assert logistic.tobytes() == predict_logistic(r.logistic, emb).tobytes()
    assert r.mf_scores(emb[:3]) is not r.mf_scores(emb[:3])  # few rows: computed, not memoised
