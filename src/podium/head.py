"""The TRINITY head: a linear map from a text encoding to one logit per pool model plus 3 role logits.

Input features of one decision are ``[z, 1, failed]``: ``z`` is the encoding projected onto ``k``
whitened principal components (fitted on the training texts), ``1`` a bias, and ``failed`` one
indicator per model that already failed in this run (the transcript, used by cascade heads). The
whole map from encoding to logits stays linear: ``logits = features @ weights``.

Masking: a model that is not available (removed from the pool, excluded by policy, unknown
outcome, already failed) gets logit ``-inf`` and is never chosen; no retraining is needed.

A head is saved as one ``.npz`` file: the arrays plus a JSON metadata string (pool model names,
encoder spec, dimensions, training data, objective, seed). It loads without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from podium.errors import UsageError

ROLE_NAMES = ("thinker", "worker", "verifier")
FORMAT = "podium-head/1"


class HeadFileError(UsageError):
    """A head file is missing, unreadable, or not a podium head."""


@dataclass
class Head:
    """Parameters and metadata of a learned coordinator."""

    models: list[str]
    encoder: dict
    mean: np.ndarray  # (D,) encoding mean
    proj: np.ndarray  # (D, k) whitened PCA basis
    weights: np.ndarray  # (k + 1 + M, M + 3)
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.proj.shape[1]

    @property
    def n_models(self) -> int:
        return len(self.models)

    @staticmethod
    def n_inputs(k: int, n_models: int) -> int:
        """Rows of the weight matrix: projected encoding, bias, failed-model indicators."""
        return k + 1 + n_models

    def project(self, emb: np.ndarray) -> np.ndarray:
        """``[z, 1]`` for encodings ``emb`` of shape (n, D)."""
        z = (np.atleast_2d(emb) - self.mean) @ self.proj
        return np.hstack([z, np.ones((len(z), 1), dtype=z.dtype)])

    def features(self, emb: np.ndarray, failed: np.ndarray | None = None) -> np.ndarray:
        """``[z, 1, failed]``; ``failed`` is an (n, M) 0/1 array (none failed when omitted)."""
        base = self.project(emb)
        if failed is None:
            failed = np.zeros((len(base), self.n_models), dtype=base.dtype)
        return np.hstack([base, np.atleast_2d(failed).astype(base.dtype)])

    def logits(self, emb: np.ndarray, failed: np.ndarray | None = None) -> np.ndarray:
        """(n, M + 3) logits: models first, then the roles in :data:`ROLE_NAMES` order."""
        return self.features(emb, failed) @ self.weights

    def choose(self, emb: np.ndarray, available: np.ndarray | None = None, failed: np.ndarray | None = None) -> np.ndarray:
        """Index of the chosen model per row; unavailable models are masked out."""
        model_logits = self.logits(emb, failed)[:, : self.n_models]
        return masked_argmax(model_logits, available)

    def save(self, path: str | Path) -> Path:
        """Write the head to one ``.npz`` file (``.npz`` is appended when missing)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": FORMAT, "models": self.models, "encoder": self.encoder,
                "dims": {"encoding": int(self.proj.shape[0]), "projected": self.k, "models": self.n_models, "roles": len(ROLE_NAMES)}}
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, proj=self.proj, weights=self.weights, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Head":
        """Read a head file written by :meth:`save`."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise HeadFileError(f"{path}: head file not found; train one with: podium train replay DATASET_DIR --out {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = data["mean"], data["proj"], data["weights"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise HeadFileError(f"{path}: not a podium head file ({exc})") from None
        if meta.get("format") != FORMAT:
            raise HeadFileError(f"{path}: unsupported head format {meta.get('format')!r}; expected {FORMAT}")
        head = cls(list(meta["models"]), dict(meta["encoder"]), *arrays, meta=meta)
        expected = (cls.n_inputs(head.k, head.n_models), head.n_models + len(ROLE_NAMES))
        if head.weights.shape != expected:
            raise HeadFileError(f"{path}: weights have shape {head.weights.shape}, expected {expected}")
        return head


def masked_argmax(logits: np.ndarray, available: np.ndarray | None) -> np.ndarray:
    """Row-wise argmax over the available columns (a row with none available picks column 0)."""
    if available is None:
        return np.argmax(logits, axis=-1)
    return np.argmax(np.where(available, logits, -np.inf), axis=-1)
