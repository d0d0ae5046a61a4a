"""Replay dataset loading, cost resolution, encoders and the embedding cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from podium.errors import UsageError
from podium.learned.encoders import EmbeddingCache, HashedNgramEncoder, get_encoder, podium_home, register_encoder
from podium.learned.replay import UNIFORM_CALL_COST, ReplayDataError, load_replay, resolve_costs

TASK_WORDS = {
    "fruit": "apple banana cherry grape mango peach plum kiwi lemon melon",
    "animal": "zebra yak walrus tiger otter lynx heron gecko ferret donkey",
    "space": "planet comet nebula quasar pulsar orbit galaxy meteor rocket lunar",
}
MODELS = ["alpha", "beta", "gamma"]  # alpha is best on fruit, beta on animal, gamma on space


def make_dataset(folder: Path, per_task: int = 80, seed: int = 0, prices: dict | None = None, drop: int = 0) -> Path:
    """A synthetic replay folder: model i is right on task i (90%) and mostly wrong elsewhere (30%).

    ``drop`` removes that many outcome rows (unknown outcomes).
    """
    rng = np.random.default_rng(seed)
    items, outcomes = [], []
    for t, (task, words) in enumerate(TASK_WORDS.items()):
        vocab = words.split()
        for i in range(per_task):
            item_id = f"{task}-{i}"
            text = " ".join(rng.choice(vocab, size=12)) + f" question {i}?"
            items.append({"item_id": item_id, "task": task, "split": "test" if i % 5 == 0 else "train", "text": text})
            for m, model in enumerate(MODELS):
                p = 0.9 if m == t else 0.3 - 0.1 * m
                outcomes.append(
                    {
                        "item_id": item_id,
                        "model": model,
                        "score": float(rng.random() < p),
                        "cost_usd": None,
                        "output_chars": None,
                    }
                )
    if drop:
        outcomes = outcomes[drop:]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(items), folder / "items.parquet")
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("model", pa.string()),
            ("score", pa.float64()),
            ("cost_usd", pa.float64()),
            ("output_chars", pa.int64()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(outcomes, schema=schema), folder / "outcomes.parquet")
    (folder / "models.json").write_text(json.dumps(prices or {m: {} for m in MODELS}))
    return folder


def test_load_dense_arrays_and_missing_outcomes_are_unknown(tmp_path: Path) -> None:
    ds = load_replay(make_dataset(tmp_path / "synth", per_task=10, drop=2))
    assert ds.models == MODELS
    assert ds.scores.shape == (30, 3)
    assert np.isnan(ds.scores[0, 0]) and np.isnan(ds.scores[0, 1])  # dropped: unknown, not 0
    assert not ds.known[0, 0] and ds.known[0, 2]
    assert set(ds.splits) == {"train", "test"}
    assert ds.cost_source == "uniform_per_call"
    assert np.allclose(ds.costs, UNIFORM_CALL_COST)


def test_costs_from_price_table_scale_with_price(tmp_path: Path) -> None:
    prices = {
        "alpha": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0},
        "beta": {"input_usd_per_mtok": 10.0, "output_usd_per_mtok": 10.0},
        "gamma": {},
    }
    ds = load_replay(make_dataset(tmp_path / "p", per_task=5, prices=prices))
    assert "price_table" in ds.cost_source
    assert np.allclose(ds.costs[:, 1], 10 * ds.costs[:, 0])
    assert np.allclose(ds.costs[:, 2], UNIFORM_CALL_COST)  # no price, no length: uniform


def test_bad_folders_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayDataError, match="not a directory"):
        load_replay(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayDataError, match=r"items\.parquet"):
        load_replay(tmp_path / "empty")


def test_hashed_encoder_is_deterministic_normalised_and_discriminative() -> None:
    enc = HashedNgramEncoder(dim=256)
    a, b, c = enc.encode(["apple banana cherry", "apple banana cherry", "zebra yak walrus"])
    assert np.array_equal(a, b)
    assert abs(np.linalg.norm(a) - 1.0) < 1e-5
    assert a @ c < 0.5 < a @ b
    assert get_encoder({"name": "hashed", "dim": 256}).spec() == enc.spec()
    with pytest.raises(UsageError, match="unknown encoder"):
        get_encoder("nope")


class CountingEncoder:
    """A plug-in encoder that counts how many texts it really encoded."""

    name = "counting"
    dim = 4

    def __init__(self) -> None:
        self.encoded = 0

    def spec(self) -> dict:
        return {"name": self.name}

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return np.array([[len(t), 1, 2, 3] for t in texts], dtype=np.float32)


def test_embedding_cache_by_text_hash_under_podium_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    assert podium_home() == tmp_path / "home"
    register_encoder("counting", CountingEncoder)
    enc = CountingEncoder()
    first = EmbeddingCache(enc).encode(["a", "bb", "a"])
    assert enc.encoded == 2  # the repeated text is encoded once
    again = EmbeddingCache(enc).encode(["bb", "a", "ccc"])  # a fresh cache object reads the disk
    assert enc.encoded == 3
    assert again[0][0] == 2 and again[1][0] == 1 and first[2][0] == 1
    assert list((tmp_path / "home" / "embeddings").glob("counting-*/*.npz"))


def test_embedding_cache_skips_another_process_half_written_shard(tmp_path: Path) -> None:
    """Two eval workers share the cache folder: one must not read the other's temp file while it is
    being written (a cold `eval replay --jobs 2` died with BadZipFile), nor a torn shard."""
    enc = CountingEncoder()
    cache = EmbeddingCache(enc, tmp_path)
    EmbeddingCache(enc, tmp_path).encode(["a"])
    (cache.folder / f".0123.{os.getpid() + 1}.tmp.npz").write_bytes(b"PK\x03\x04 half a zip")
    (cache.folder / "4567.npz").write_bytes(b"not a zip at all")
    vectors = cache.encode(["a", "bb"])
    assert vectors[:, 0].tolist() == [1, 2]
    assert enc.encoded == 2  # "a" came from the good shard, "bb" was encoded


def _reference_cells(folder: Path, ids: list[object], models: list[str]) -> list[np.ndarray]:
    """The outcome grid as the loader built it before it was vectorised: one row at a time."""
    table = pq.read_table(folder / "outcomes.parquet")
    n, row, col = len(ids), {item: i for i, item in enumerate(ids)}, {m: j for j, m in enumerate(models)}
    grids = [np.full((n, len(models)), np.nan) for _ in range(3)]
    columns = [
        table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
        for c in ("item_id", "model", "score", "cost_usd", "output_chars")
    ]
    for item, model, *values in zip(*columns):
        i = row.get(item)
        if i is None:
            continue
        for grid, value in zip(grids, values):
            grid[i, col[model]] = np.nan if value is None else float(value)
    return grids


def test_outcome_grid_matches_the_row_by_row_reference_bit_for_bit(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "synth", per_task=12, seed=3)
    table = pq.read_table(folder / "outcomes.parquet").to_pylist()
    rng = np.random.default_rng(1)
    extra = []
    for k in range(40):  # repeated (item, model) pairs (the last counts), unlisted items, missing values
        base = dict(table[int(rng.integers(len(table)))])
        base["score"] = None if k % 7 == 0 else float(rng.random())
        base["cost_usd"] = None if k % 3 else float(rng.random())
        base["output_chars"] = int(rng.integers(0, 900)) if k % 2 else None
        if k % 5 == 0:
            base["item_id"] = f"unlisted-{k}"
        extra.append(base)
    schema = pq.read_schema(folder / "outcomes.parquet")
    pq.write_table(pa.Table.from_pylist(table + extra, schema=schema), folder / "outcomes.parquet", row_group_size=50)
    ds = load_replay(folder)
    scores, recorded, chars = _reference_cells(folder, list(ds.item_ids), ds.models)
    assert scores.tobytes() == ds.scores.tobytes()  # NaN where unknown, the last of repeated rows, same bits
    costs, source = resolve_costs(ds.texts, ds.models, ds.prices, recorded, chars)
    assert (costs.tobytes(), source) == (ds.costs.tobytes(), ds.cost_source)
    assert "recorded" in source and not np.isnan(chars).all()  # the cost and length columns were read
