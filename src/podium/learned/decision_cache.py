"""A routing-decision cache keyed by encoding similarity, with a similarity threshold, a size bound and a TTL.

The learned coordinator's decision is a function of the query's encoding (and of the run's
context: which models failed, the cost weight). Queries that encode almost the same (a repeat, a
light paraphrase) get the same head logits, so the logits of a recent similar query can be reused
and the head's kNN lookup skipped. A lookup is a hit when a live entry with the same ``context``
has cosine similarity at least ``threshold`` with the query; entries expire ``ttl_s`` seconds after
they were stored, and the least recently used entry makes room when ``max_size`` is reached.

With ``PODIUM_REDIS_URL`` set, :func:`open_decision_cache` gives a :class:`SharedDecisionCache`:
every replica's entries are shared through a capped Redis stream (see :mod:`podium.state.caches`),
lookups stay local (a miss first reads the entries other replicas added since the last miss), and
Redis going away leaves each replica with its local cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Hashable
from typing import Any

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

    def put(self, vec: np.ndarray, value: object, context: Hashable = None, age_s: float = 0.0) -> None:
        """Store ``value`` for ``vec`` (stored ``age_s`` seconds ago); evicts an expired entry, else the
        least recently used one, when full."""
        now, unit = self.clock() - age_s, self._unit(vec)
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


class SharedDecisionCache(DecisionCache):
    """A :class:`DecisionCache` whose entries every replica sharing the Redis at ``url`` sees.

    Values are numpy arrays (the head's logits) or JSON values; contexts ``bytes``, ``str`` or None
    (an entry with another kind of context stays local)."""

    def __init__(self, url: str, name: str = "default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from ..state.caches import DecisionStream

        self.stream = DecisionStream(url, name, self.max_size)
        self._own: set[str] = set()  # ids of entries this process added (already in its local cache)
        self.shared = 0  # hits on entries another replica added

    def get(self, vec: np.ndarray, context: Hashable = None) -> object | None:
        hit = super().get(vec, context)
        if hit is not None or not self._pull():
            return hit
        self.misses -= 1  # looked up again with the other replicas' entries
        hit = super().get(vec, context)
        self.shared += hit is not None
        return hit

    def put(self, vec: np.ndarray, value: object, context: Hashable = None, age_s: float = 0.0) -> None:
        super().put(vec, value, context, age_s)
        fields = _encode(self._unit(vec), value, context)
        if fields is not None:
            fields[b"t"] = repr(time.time() - age_s).encode()
            entry_id = self.stream.add(fields, self.ttl_s)
            if entry_id is not None:
                self._own.add(entry_id)

    def _pull(self) -> int:
        """Add the entries other replicas stored since the last pull; how many were added."""
        added = 0
        for entry_id, fields in self.stream.new_entries():
            if entry_id in self._own:
                self._own.discard(entry_id)
                continue
            age = time.time() - float(fields[b"t"])
            if age >= self.ttl_s:
                continue
            vec, value, context = _decode(fields)
            DecisionCache.put(self, vec, value, context, max(0.0, age))
            added += 1
        return added


def _encode(unit: np.ndarray, value: object, context: Hashable) -> dict[bytes, bytes] | None:
    if context is None:
        ctx = b"n"
    elif isinstance(context, bytes):
        ctx = b"b" + context
    elif isinstance(context, str):
        ctx = b"s" + context.encode()
    else:
        return None
    if isinstance(value, np.ndarray):
        head = json.dumps({"dtype": value.dtype.str, "shape": list(value.shape)}).encode()
        val = b"a" + len(head).to_bytes(4, "big") + head + np.ascontiguousarray(value).tobytes()
    else:
        try:
            val = b"j" + json.dumps(value).encode()
        except TypeError:
            return None
    return {b"v": unit.astype(np.float32).tobytes(), b"x": val, b"c": ctx}


def _decode(fields: dict[bytes, bytes]) -> tuple[np.ndarray, object, Hashable]:
    vec = np.frombuffer(fields[b"v"], dtype=np.float32)
    raw, ctx = fields[b"x"], fields[b"c"]
    context: Hashable = None if ctx == b"n" else (ctx[1:] if ctx[:1] == b"b" else ctx[1:].decode())
    if raw[:1] == b"a":
        size = int.from_bytes(raw[1:5], "big")
        head = json.loads(raw[5 : 5 + size])
        value: object = np.frombuffer(raw[5 + size :], dtype=np.dtype(head["dtype"])).reshape(head["shape"]).copy()
    else:
        value = json.loads(raw[1:])
    return vec, value, context


def open_decision_cache(name: str = "default", **kwargs: Any) -> DecisionCache:
    """A :class:`SharedDecisionCache` when ``PODIUM_REDIS_URL`` is set, else an in-process one."""
    url = os.environ.get("PODIUM_REDIS_URL", "").strip()
    return SharedDecisionCache(url, name, **kwargs) if url else DecisionCache(**kwargs)
