"""A routing-decision cache keyed by encoding similarity, with a similarity threshold, a size bound and a TTL.

The learned coordinator's decision is a function of the query's encoding (and of the run's
context: which models failed, the cost weight). Queries that encode almost the same (a repeat, a
light paraphrase) get the same head logits, so the logits of a recent similar query can be reused
and the head's kNN lookup skipped. A lookup is a hit when a live entry with the same ``context``
has cosine similarity at least ``threshold`` with the query; entries expire ``ttl_s`` seconds after
they were stored, and the least recently used entry makes room when ``max_size`` is reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

import numpy as np


class DecisionCache:
    """Vectors (unit-normalised on the way in) → cached values; see the module docstring."""

    def __init__(
        self,
        threshold: float = 0.97,
        max_size: int = 4096,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < threshold <= 1.0 or max_size < 1 or ttl_s <= 0:
            raise ValueError("decision cache: threshold in (0, 1], max_size ≥ 1 and ttl_s > 0")
        self.threshold, self.max_size, self.ttl_s, self.clock = threshold, max_size, ttl_s, clock
        self._vecs: np.ndarray | None = None
        self._context: list[Hashable] = []
        self._values: list[object] = []
        self._stored = np.zeros(0)
        self._used = np.zeros(0)
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    @staticmethod
    def _unit(vec: np.ndarray) -> np.ndarray:
        v = np.asarray(vec, dtype=np.float32).ravel()
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def get(self, vec: np.ndarray, context: Hashable = None) -> object | None:
        """The value of the most similar live entry with this context, if similar enough; else None."""
        now = self.clock()
        if self._vecs is not None and len(self._values):
            sims = self._vecs[: len(self._values)] @ self._unit(vec)
            live = (now - self._stored[: len(self._values)] < self.ttl_s) & np.array(
                [c == context for c in self._context]
            )
            sims = np.where(live, sims, -np.inf)
            best = int(np.argmax(sims))
            if sims[best] >= self.threshold:
                self._used[best] = now
                self.hits += 1
                return self._values[best]
        self.misses += 1
        return None

    def put(self, vec: np.ndarray, value: object, context: Hashable = None) -> None:
        """Store ``value`` for ``vec``; evicts an expired entry, else the least recently used one, when full."""
        now, unit = self.clock(), self._unit(vec)
        if self._vecs is None:
            self._vecs = np.zeros((self.max_size, len(unit)), dtype=np.float32)
            self._stored, self._used = np.zeros(self.max_size), np.zeros(self.max_size)
        n = len(self._values)
        if n < self.max_size:
            slot = n
            self._context.append(context)
            self._values.append(value)
        else:
            expired = np.flatnonzero(now - self._stored >= self.ttl_s)
            slot = int(expired[0]) if len(expired) else int(np.argmin(self._used))
            self._context[slot], self._values[slot] = context, value
        self._vecs[slot], self._stored[slot], self._used[slot] = unit, now, now

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
