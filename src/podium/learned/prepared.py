"""A replay dataset encoded and split for training: the fit / validation rows, the cost unit, and the
projections, kNN memory and features every head trained on the same rows shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from .encoders import EmbeddingCache, Encoder, get_encoder
from .head import Head, KnnMemory
from .replay import ReplayDataset
from .rewards import fit_projection

if TYPE_CHECKING:
    from collections.abc import Callable

    from .train import TrainConfig

    Progress = Callable[[str], None]


def embed(
    ds: ReplayDataset,
    encoder: Encoder,
    cache_root: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    """Encodings of every item of ``ds`` (cached on disk by text hash; slow encoders report an ETA)."""
    if use_cache:
        return EmbeddingCache(encoder, cache_root).encode(ds.texts, progress)
    return encoder.encode(ds.texts)


@dataclass
class Prepared:
    """A dataset encoded and split for training."""

    ds: ReplayDataset
    emb: np.ndarray
    train_rows: np.ndarray
    fit_rows: np.ndarray
    val_rows: np.ndarray
    cost_unit: float
    _projections: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _memories: dict[tuple[Any, ...], KnnMemory] = field(default_factory=dict)
    _features: dict[tuple[Any, ...], np.ndarray] = field(default_factory=dict)

    def memory(self, config: TrainConfig) -> KnnMemory | None:
        """The kNN memory over all train rows (None when ``config.knn_ks`` is empty)."""
        if not config.knn_ks:
            return None
        key = (config.knn_ks, config.knn_dim, config.knn_smooth)
        if key not in self._memories:
            rows = self.train_rows
            mean, basis = fit_projection(self.emb[rows], config.knn_dim, whiten=False)
            scores, known = np.nan_to_num(self.ds.scores[rows]).astype(np.float32), self.ds.known[rows]
            prior = (scores * known).sum(axis=0) / known.sum(axis=0).clip(min=1)
            memory = KnnMemory(
                mean,
                basis,
                np.zeros((0, 0), np.float32),
                scores,
                known,
                prior.astype(np.float32),
                tuple(config.knn_ks),
                config.knn_smooth,
            )
            memory.emb = memory.embed(self.emb[rows])
            self._memories[key] = memory
        return self._memories[key]

    def projected(self, head: Head, config: TrainConfig, which: str) -> np.ndarray:
        """``head.project`` of the fit or val rows (leave-one-out kNN features), cached per settings."""
        key = (which, config.k, config.knn_ks, config.knn_dim, config.knn_smooth)
        if key not in self._features:
            rows = self.fit_rows if which == "fit" else self.val_rows
            self._features[key] = head.project(self.emb[rows], self.self_rows(rows))
        return self._features[key]

    def self_rows(self, rows: np.ndarray) -> np.ndarray:
        """Position of each train row in the kNN memory (to leave it out of its own neighbours)."""
        return np.searchsorted(self.train_rows, rows)

    def projection(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The PCA projection of the fit rows (computed once per ``k``)."""
        if k not in self._projections:
            self._projections[k] = fit_projection(self.emb[self.fit_rows], k)
        return self._projections[k]


def prepare(
    ds: ReplayDataset,
    config: TrainConfig,
    emb: np.ndarray | None = None,
    cache_root: Path | None = None,
    progress: Progress | None = None,
) -> Prepared:
    """Encode ``ds`` and split its train rows into fit / validation (seeded)."""
    train_rows = ds.indices("train")
    if len(train_rows) < 10:
        raise UsageError(
            f"dataset {ds.name}: only {len(train_rows)} train items; at least 10 are needed (from your own "
            "runs: about 15 distinct questions answered and verified, since ~70% of items go to train)"
        )
    if emb is None:
        emb = embed(ds, get_encoder(config.encoder), cache_root, progress=progress)
    perm = np.random.default_rng(config.seed).permutation(train_rows)
    n_val = max(1, int(round(len(perm) * config.val_frac)))
    known_costs = ds.costs[train_rows][ds.known[train_rows]]
    cost_unit = float(known_costs.mean()) if known_costs.size and known_costs.mean() > 0 else 1.0
    return Prepared(ds, emb, train_rows, np.sort(perm[n_val:]), np.sort(perm[:n_val]), cost_unit)
