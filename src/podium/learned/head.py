"""The TRINITY head: a linear map from a text encoding to one logit per pool model plus 3 role logits.

Input features of one decision are ``[z, 1, knn, failed]``: ``z`` is the encoding projected onto
``k`` whitened principal components (fitted on the training texts), ``1`` a bias, ``knn`` the
per-model success rates among the nearest training items at a few neighbourhood sizes (looked up
in the head's :class:`KnnMemory`; absent in heads trained without one), and ``failed`` one
indicator per model that already failed in this run (the transcript, used by cascade heads). The
map from features to logits stays linear: ``logits = features @ weights``.

Masking: a model that is not available (removed from the pool, excluded by policy, unknown
outcome, already failed) gets logit ``-inf`` and is never chosen; no retraining is needed.

A head is saved as one ``.npz`` file: the arrays plus a JSON metadata string (pool model names,
encoder spec, dimensions, training data, objective, seed). It loads without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..roles import TURN_ROLES
from .memo import MIN_ROWS, Memo

ROLE_NAMES = TURN_ROLES  # the head's role logits, in this order
FORMAT = "podium-head/1"
NEIGHBOURS = Memo(384 << 20)  # (n, kmax) neighbour rows of many encodings at once
PROJECTED = Memo(256 << 20)  # [z, 1, knn] of many encodings at once
EMBEDDED = Memo(256 << 20)  # many encodings in a kNN memory's space
MEMORY_ARRAYS = ("mem_mean", "mem_basis", "mem_emb", "mem_scores", "mem_known", "mem_prior")


class HeadFileError(UsageError):
    """A head file is missing, unreadable, or not a podium head."""


@dataclass
class KnnMemory:
    """Training items a head looks up at decision time (kNN features).

    Feature ``(j, m)`` of a query is model ``m``'s mean score over the ``ks[j]`` training items
    whose encodings are most similar (cosine on a ``r``-dimensional PCA of the encoding), smoothed
    towards the model's mean score with weight ``smooth``. During training each training item is
    left out of its own neighbourhood (``self_rows``), so the features carry no label of the item
    itself.
    """

    mean: np.ndarray  # (D,)
    basis: np.ndarray  # (D, r) orthonormal PCA basis
    emb: np.ndarray  # (N, r) unit vectors of the training items
    scores: np.ndarray  # (N, M) recorded scores, unknown = 0
    known: np.ndarray  # (N, M) bool
    prior: np.ndarray  # (M,) mean score per model
    ks: tuple[int, ...] = (5, 20, 100)
    smooth: float = 1.0

    @property
    def n_features(self) -> int:
        return len(self.ks) * int(self.scores.shape[1])

    def embed(self, emb: np.ndarray) -> np.ndarray:
        """Unit vectors in the memory's space (memoised for many rows: a RouteLLM slice that keeps
        every row builds the same memories again)."""
        emb = np.atleast_2d(emb)
        return EMBEDDED.for_rows(len(emb), lambda: self._embed(emb), "embed", emb, self.mean, self.basis)

    def _embed(self, emb: np.ndarray) -> np.ndarray:
        x = ((emb - self.mean) @ self.basis).astype(np.float32)
        unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
        return unit

    def neighbours(self, x: np.ndarray, self_rows: np.ndarray | None) -> np.ndarray:
        """(n, kmax) memory rows most similar to unit vectors ``x``, leaving out ``self_rows[i]`` (if ≥ 0)."""
        kmax = self.kmax
        memory = self.emb if self.emb.dtype == np.float32 else self.emb.astype(np.float32)
        sims = x @ memory.T  # no copy of the memory per query (a view has the same layout as the old copy)
        top = np.argpartition(-sims, kmax, axis=1)[:, : kmax + 1]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        drop = np.full(len(x), kmax)  # without a self row, the (kmax + 1)-th is dropped
        if self_rows is not None:
            hit = top == np.asarray(self_rows)[:, None]
            drop = np.where(hit.any(axis=1), np.argmax(hit, axis=1), drop)
        keep = np.ones(top.shape, dtype=bool)
        keep[np.arange(len(x)), drop] = False
        return top[keep].reshape(len(x), kmax)

    @property
    def kmax(self) -> int:
        return min(max(self.ks), len(self.emb) - 1)

    def key(self) -> tuple[Any, ...]:
        """What the features depend on besides the query (for :func:`podium.learned.memo.fingerprint`)."""
        return (self.mean, self.basis, self.emb, self.scores, self.known, self.prior, self.ks, self.smooth)

    def all_neighbours(self, emb: np.ndarray, self_rows: np.ndarray | None = None) -> np.ndarray:
        """:meth:`neighbours` of encodings ``emb`` (n, D), 1024 rows at a time; memoised for many rows."""
        emb = np.atleast_2d(emb)

        def compute() -> np.ndarray:
            x, out = self.embed(emb), []
            for start in range(0, len(x), 1024):
                rows = None if self_rows is None else self_rows[start : start + 1024]
                out.append(self.neighbours(x[start : start + 1024], rows))
            return np.vstack(out)

        parts = ("neighbours", emb, self_rows, self.mean, self.basis, self.emb, self.kmax)
        return NEIGHBOURS.for_rows(len(emb), compute, *parts)

    def features(self, emb: np.ndarray, self_rows: np.ndarray | None = None) -> np.ndarray:
        """(n, len(ks) · M) smoothed neighbour success rates; ``self_rows`` as in :meth:`neighbours`."""
        neighbours, out = self.all_neighbours(emb, self_rows), []
        for start in range(0, len(neighbours), 1024):
            nb = neighbours[start : start + 1024]
            sums = self._prefix_sums(nb, [min(k, nb.shape[1]) - 1 for k in self.ks])
            feats = [(num + self.smooth * self.prior) / (den + self.smooth) for num, den in sums]
            out.append(np.hstack(feats))
        return np.vstack(out).astype(np.float32)

    def _prefix_sums(self, nb: np.ndarray, at: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(score sum, known count) over the first ``i + 1`` neighbours, for each ``i`` in ``at``.

        The running sums ``np.cumsum`` makes along the neighbours (same additions, same order): for
        many rows one neighbour column at a time, without the (n, kmax, M) gathered and summed arrays."""
        if len(nb) < MIN_ROWS:
            num = np.cumsum(self.scores[nb], axis=1)
            den = np.cumsum(self.known[nb], axis=1, dtype=np.float32)
            return [(num[:, i], den[:, i]) for i in at]
        num = self.scores[nb[:, 0]]
        den = self.known[nb[:, 0]].astype(np.float32)
        sums = [(num.copy(), den.copy())] if 0 in at else []
        for j in range(1, max(at) + 1):
            num += self.scores[nb[:, j]]
            den += self.known[nb[:, j]]
            if j in at:
                sums.append((num.copy(), den.copy()))
        return [sums[sorted(set(at)).index(i)] for i in at]

    def arrays(self) -> dict[str, np.ndarray]:
        values = (
            self.mean,
            self.basis,
            self.emb.astype(np.float16),
            self.scores.astype(np.float16),
            self.known,
            self.prior,
        )
        return dict(zip(MEMORY_ARRAYS, values))

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], ks: list[int], smooth: float) -> KnnMemory:
        mean, basis, emb, scores, known, prior = (arrays[n] for n in MEMORY_ARRAYS)
        return cls(
            mean, basis, emb.astype(np.float32), scores.astype(np.float32), known.astype(bool), prior, tuple(ks), smooth
        )


@dataclass
class Gate:
    """Shrinkage towards the fallback: answer with the first available model of ``order`` (the best
    single models, by train score) unless the head's best model's logit beats that model's by at
    least ``margin`` (``inf``: always the fallback). Chosen by cross-validation (:mod:`podium.learned.crossval`)."""

    order: np.ndarray  # model indices, best first
    margin: float
    info: dict[str, Any] = field(default_factory=dict)

    def apply(self, logits: np.ndarray, available: np.ndarray | None) -> np.ndarray:
        """Gated choice per row of (n, M) model logits."""
        avail = np.ones(logits.shape, dtype=bool) if available is None else np.asarray(available, dtype=bool)
        fallback: np.ndarray = self.order[np.argmax(avail[:, self.order], axis=1)]
        if not np.isfinite(self.margin):
            return fallback
        pick = masked_argmax(logits, avail)
        rows = np.arange(len(pick))
        chosen: np.ndarray = np.where(
            logits[rows, pick] - logits[rows, fallback] >= max(self.margin, 1e-12), pick, fallback
        )
        return chosen

    def to_meta(self, models: list[str]) -> dict[str, Any]:
        margin = None if not np.isfinite(self.margin) else float(self.margin)
        return {"fallback_order": [models[i] for i in self.order], "margin": margin, **self.info}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], models: list[str]) -> Gate:
        margin = meta.get("margin")
        info = {k: v for k, v in meta.items() if k not in ("fallback_order", "margin")}
        return cls(
            np.array([models.index(m) for m in meta["fallback_order"]]),
            np.inf if margin is None else float(margin),
            info,
        )


@dataclass
class Head:
    """Parameters and metadata of a learned coordinator."""

    models: list[str]
    encoder: dict[str, Any]
    mean: np.ndarray  # (D,) encoding mean
    proj: np.ndarray  # (D, k) whitened PCA basis
    weights: np.ndarray  # (k + 1 + F + M, M + 3), F = kNN features (0 without memory)
    meta: dict[str, Any] = field(default_factory=dict)
    memory: KnnMemory | None = None
    gate: Gate | None = None  # safe heads: fall back to the best single model unless the margin is met

    @property
    def k(self) -> int:
        return int(self.proj.shape[1])

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_knn(self) -> int:
        return self.memory.n_features if self.memory is not None else 0

    @staticmethod
    def n_inputs(k: int, n_models: int, n_knn: int = 0) -> int:
        """Rows of the weight matrix: projected encoding, bias, kNN features, failed-model indicators."""
        return k + 1 + n_knn + n_models

    def project(self, emb: np.ndarray, self_rows: np.ndarray | None = None) -> np.ndarray:
        """``[z, 1, knn]`` for encodings ``emb`` of shape (n, D); ``self_rows``: see :class:`KnnMemory`.

        Memoised for many rows (every head trained on one split shares its projection and memory, and
        evaluation projects the same rows for each of them); the array returned is then read-only."""
        emb = np.atleast_2d(emb)
        memory = self.memory.key() if self.memory is not None else ()
        parts = ("project", emb, self_rows, self.mean, self.proj, *memory)
        return PROJECTED.for_rows(len(emb), lambda: self._project(emb, self_rows), *parts)

    def _project(self, emb: np.ndarray, self_rows: np.ndarray | None) -> np.ndarray:
        z = (emb - self.mean) @ self.proj
        parts = [z, np.ones((len(z), 1), dtype=z.dtype)]
        if self.memory is not None:
            parts.append(self.memory.features(emb, self_rows).astype(z.dtype))
        return np.hstack(parts)

    def features(
        self, emb: np.ndarray, failed: np.ndarray | None = None, self_rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``[z, 1, knn, failed]``; ``failed`` is an (n, M) 0/1 array (none failed when omitted)."""
        base = self.project(emb, self_rows)
        if failed is None:
            failed = np.zeros((len(base), self.n_models), dtype=base.dtype)
        return np.hstack([base, np.atleast_2d(failed).astype(base.dtype)])

    def logits(
        self, emb: np.ndarray, failed: np.ndarray | None = None, self_rows: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, M + 3) logits: models first, then the roles in :data:`ROLE_NAMES` order."""
        out: np.ndarray = self.features(emb, failed, self_rows) @ self.weights
        return out

    def choose(
        self,
        emb: np.ndarray,
        available: np.ndarray | None = None,
        failed: np.ndarray | None = None,
        self_rows: np.ndarray | None = None,
        cost_weight: float = 0.0,
    ) -> np.ndarray:
        """Index of the chosen model per row; unavailable models are masked out (and the gate applied)."""
        return self.pick(self.logits(emb, failed, self_rows)[:, : self.n_models], available, cost_weight)

    def pick(
        self,
        model_logits: np.ndarray,
        available: np.ndarray | None = None,
        cost_weight: float = 0.0,
        lam: float | None = None,
    ) -> np.ndarray:
        """The decision rule on (n, M) model logits: gate at cost weight 0, else the cost knob
        (:mod:`podium.learned.knob`; ``lam`` overrides the calibrated λ of ``cost_weight``)."""
        from .knob import knob_logits, lambda_for

        if lam is None:
            lam = lambda_for(self.meta["knob"], cost_weight) if cost_weight and "knob" in self.meta else 0.0
            if cost_weight and "knob" not in self.meta:
                raise HeadFileError("this head has no cost knob table; retrain it with podium train replay")
        if lam > 0 and self.gate is not None:
            avail = np.ones(model_logits.shape, dtype=bool) if available is None else np.asarray(available, dtype=bool)
            costs = np.asarray(self.meta["knob"]["model_cost"], dtype=float)
            choice: np.ndarray = np.argmax(
                knob_logits(model_logits, avail, self.gate.order, self.gate.margin, costs, lam), axis=-1
            )
            return choice
        if self.gate is not None:
            return self.gate.apply(model_logits, available)
        return masked_argmax(model_logits, available)

    def save(self, path: str | Path) -> Path:
        """Write the head to one ``.npz`` file (``.npz`` is appended when missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            **self.meta,
            "format": FORMAT,
            "models": self.models,
            "encoder": self.encoder,
            "dims": {
                "encoding": int(self.proj.shape[0]),
                "projected": self.k,
                "models": self.n_models,
                "roles": len(ROLE_NAMES),
                "knn_features": self.n_knn,
            },
        }
        if self.gate is not None:
            meta["gate"] = self.gate.to_meta(self.models)
        arrays: dict[str, Any] = {}  # Any: savez_compressed's **kwds would otherwise clash with allow_pickle
        if self.memory is not None:
            meta["knn"] = {
                "ks": list(self.memory.ks),
                "smooth": self.memory.smooth,
                "items": len(self.memory.emb),
                "dim": int(self.memory.basis.shape[1]),
            }
            arrays = self.memory.arrays()
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh, mean=self.mean, proj=self.proj, weights=self.weights, meta=np.array(json.dumps(meta)), **arrays
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """Read a head file written by :meth:`save`."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise HeadFileError(
                f"{path}: head file not found; train one with: podium train replay DATASET_DIR --out {path}"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = data["mean"], data["proj"], data["weights"]
                memory = (
                    KnnMemory.from_arrays(data, meta["knn"]["ks"], meta["knn"]["smooth"]) if "knn" in meta else None
                )
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise HeadFileError(f"{path}: not a podium head file ({exc})") from None
        if meta.get("format") != FORMAT:
            raise HeadFileError(f"{path}: unsupported head format {meta.get('format')!r}; expected {FORMAT}")
        head = cls(list(meta["models"]), dict(meta["encoder"]), *arrays, meta=meta, memory=memory)
        if "gate" in meta:
            try:
                head.gate = Gate.from_meta(meta["gate"], head.models)
            except (KeyError, ValueError, TypeError) as exc:
                raise HeadFileError(f"{path}: bad gate record ({exc})") from None
        expected = (cls.n_inputs(head.k, head.n_models, head.n_knn), head.n_models + len(ROLE_NAMES))
        if head.weights.shape != expected:
            raise HeadFileError(f"{path}: weights have shape {head.weights.shape}, expected {expected}")
        return head


def masked_argmax(logits: np.ndarray, available: np.ndarray | None) -> np.ndarray:
    """Row-wise argmax over the available columns (a row with none available picks column 0)."""
    choice: np.ndarray = np.argmax(logits if available is None else np.where(available, logits, -np.inf), axis=-1)
    return choice
