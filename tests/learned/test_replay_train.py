"""Training heads with sep-CMA-ES on a synthetic replay set, checkpoints, cascade mode, and eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_replay_data import MODELS, TASK_WORDS, make_dataset

from podium.cli import main
from podium.learned.eval_report import format_table
from podium.learned.evaluate import evaluate_dataset
from podium.learned.replay import load_replay
from podium.learned.train import TrainConfig, load_checkpoint, prepare, train_head

FAST = TrainConfig(k=16, generations=25, encoder={"name": "hashed", "dim": 512})


@pytest.fixture
def synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    return load_replay(make_dataset(tmp_path / "synth"))


def routing_accuracy(head, prep, rows) -> float:
    """Share of rows routed to the model that is best on the row's task."""
    choice = head.choose(prep.emb[rows], prep.ds.known[rows])
    target = np.array([list(TASK_WORDS).index(t) for t in prep.ds.tasks[rows]])
    return float((choice == target).mean())


def test_training_routes_each_task_to_its_model(synth) -> None:
    prep = prepare(synth, FAST)
    head = train_head(prep, FAST, progress=None)
    test = synth.indices("test")
    assert routing_accuracy(head, prep, test) >= 0.9  # best single routes only a third right
    scores = np.nan_to_num(synth.scores[test])
    learned = scores[np.arange(len(test)), head.choose(prep.emb[test], synth.known[test])].mean()
    best_single = scores.mean(axis=0).max()
    assert learned > best_single + 0.3
    assert head.meta["objective"]["lambda"] == 0.0 and head.meta["seed"] == 0


def test_same_seed_same_head(synth) -> None:
    prep = prepare(synth, FAST)
    a = train_head(prep, FAST, progress=None)
    b = train_head(prep, FAST, progress=None)
    assert np.array_equal(a.weights, b.weights)


class Interrupted(Exception):
    pass


def test_checkpoint_resume_continues_where_it_stopped(synth, tmp_path: Path) -> None:
    prep = prepare(synth, FAST)
    ckpt = tmp_path / "ckpt.pkl"
    lines: list[str] = []

    def stop_at_10(line: str) -> None:
        lines.append(line)
        if "gen 10/" in line:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_head(prep, FAST, checkpoint=ckpt, progress=stop_at_10, every=5)
    assert load_checkpoint(ckpt, FAST).generation == 10
    assert [line for line in lines if "gen 5/25" in line]
    resumed = train_head(prep, FAST, checkpoint=ckpt, resume=True, progress=lines.append, every=5)
    assert "gen 5/25" not in lines[-1] and "gen 25/25" in lines[-1]
    assert sum("gen 15/25" in line for line in lines) == 1  # generations 1-10 were not redone
    straight = train_head(prep, FAST, progress=None)
    assert np.allclose(resumed.weights, straight.weights)
    assert load_checkpoint(ckpt, FAST).generation == 25


def test_cascade_falls_back_after_a_failure(synth) -> None:
    config = TrainConfig(**{**FAST.__dict__, "mode": "cascade", "turns": 2})
    prep = prepare(synth, config)
    head = train_head(prep, config, progress=None)
    assert head.meta["objective"]["mode"] == "cascade"
    test = synth.indices("test")
    first = head.choose(prep.emb[test], synth.known[test])
    failed = np.zeros((len(test), len(MODELS)))
    failed[np.arange(len(test)), first] = 1
    second = head.choose(prep.emb[test], synth.known[test] & (failed == 0), failed)
    assert (second != first).all()


def test_eval_beats_best_single_and_reports_every_baseline(synth) -> None:
    result = evaluate_dataset(synth, FAST, lambdas=(0.0,), progress=None)
    methods = {m["method"]: m for m in result["methods"]}
    assert {"random", "best_single", "cheapest", "oracle", "knn", "predictor", "learned", "per_task", "mf"} <= set(
        methods
    )
    assert methods["learned"]["score"] > methods["best_single"]["score"] + 0.2
    assert methods["learned"]["gap_closed"] > 0.5
    assert methods["oracle"]["gap_closed"] == 1.0
    assert methods["learned"]["latency_ms"] > 0
    assert "learned" in format_table(result)


def test_cli_train_and_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    folder = make_dataset(tmp_path / "cli", per_task=30)
    main(["train", "replay", str(folder), "--out", str(tmp_path / "h.npz"), "--generations", "3", "--quiet"])
    assert (tmp_path / "h.npz").is_file()
    from podium.learned.head import Head

    head = Head.load(tmp_path / "h.npz")  # safe by default: a CV gate and the cost-knob table
    assert head.gate is not None and "selection" in head.gate.info and len(head.meta["knob"]["points"]) > 10
    main(
        [
            "eval",
            "replay",
            str(folder),
            "--generations",
            "2",
            "--quiet",
            "--json-out",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    out = capsys.readouterr().out
    assert "best_single" in out and "learned_cascade@3" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["command"].startswith("podium eval replay") and data["results"][0]["dataset"]["name"] == "cli"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "p_verifier.png").read_bytes()[:4] == b"\x89PNG"
    result = data["results"][0]
    assert {"routellm", "cache", "verifier_sweep", "cv", "cascade_cv"} <= set(result)
    assert all(m["score_ci"] and m["delta_ci"] for m in result["methods"])


def test_cli_bad_dataset_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "replay", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err


def test_cli_bad_dataset_among_good_ones_fails_before_any_training(
    tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes (started while the folders are checked), a bad folder still fails
    first: one line, exit 2, and no dataset started ("encoding" is the first progress line)."""
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    good = str(make_dataset(tmp_path / "good", per_task=25))
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "replay", good, str(tmp_path / "missing"), "--jobs", "2", "--generations", "1"])
    assert exit_info.value.code == 2
    err = capfd.readouterr().err  # the workers' stderr too
    assert "not a directory" in err and "Traceback" not in err and "encoding" not in err
    assert len(err.strip().splitlines()) == 1
