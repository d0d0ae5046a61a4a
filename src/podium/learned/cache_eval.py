"""Measure the routing-decision cache on replay data: repeated and paraphrased queries.

A query stream is built from test items: each item once, plus exact repeats and light paraphrases
(case, punctuation and whitespace changes, a dropped or swapped word: made without an LLM, so they
are closer to the original than human paraphrases) of a share of them, in a seeded random order.
Every query is decided twice, fresh and through the cache, so the quality change is paired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .decision_cache import DecisionCache
from .stats import paired_interval

if TYPE_CHECKING:
    from .encoders import Encoder
    from .head import Head
    from .replay import ReplayDataset

THRESHOLDS = (0.9, 0.95, 0.98)


def paraphrase(text: str, rng: np.random.Generator) -> str:
    """A light, seeded rewording of ``text``."""
    words = text.split()
    edits = sorted(rng.choice(4, size=2, replace=False))  # the append last, so no edit undoes another
    for edit in edits:
        if edit == 0 and len(words) > 6:
            del words[int(rng.integers(0, len(words)))]
        elif edit == 1 and len(words) > 3:
            i = int(rng.integers(0, len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
        elif edit == 2 and words:
            words[0] = words[0].lower() if words[0][:1].isupper() else words[0].capitalize()
        else:
            words.append("please" if rng.random() < 0.5 else "?")
    return " ".join(words)


def query_stream(texts: list[str], rows: np.ndarray, n: int, share: float, seed: int) -> list[tuple[int, str, str]]:
    """(row, text, kind) with kind original / repeat / paraphrase, shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(rows, size=min(n, len(rows)), replace=False)  # in arrival order
    at = {int(r): float(i) for i, r in enumerate(picked)}
    stream = [(at[int(r)], int(r), texts[r], "original") for r in picked]
    for kind in ("repeat", "paraphrase"):  # each comes back at a random later time
        for r in rng.choice(picked, size=int(share * len(picked)), replace=False):
            text = texts[r] if kind == "repeat" else paraphrase(texts[r], rng)
            stream.append((at[int(r)] + rng.uniform(0.5, len(picked) - at[int(r)]), int(r), text, kind))
    return [(r, text, kind) for _, r, text, kind in sorted(stream, key=lambda e: e[0])]


def measure_cache(
    head: Head,
    encoder: Encoder,
    ds: ReplayDataset,
    rows: np.ndarray,
    n: int = 600,
    share: float = 0.25,
    seed: int = 0,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> list[dict[str, Any]]:
    """Hit rate, quality change (paired, 95% CI) and p50 latency of cached vs fresh decisions."""
    stream = query_stream(ds.texts, rows, n, share, seed)
    scores, known = np.nan_to_num(ds.scores), ds.known  # ds.known builds the whole mask: once, not per query
    fresh = _fresh(head, encoder, known, stream, scores)
    out = []
    for threshold in thresholds:
        cached_score, hit_ms, miss_ms, kinds, hits, wrong_item = _cached(
            head, encoder, known, stream, scores, threshold, fresh
        )
        hits_arr, kinds_arr = np.array(hits), np.array(kinds)
        lo, hi = paired_interval(np.array(cached_score), np.array(fresh.score), seed=seed)
        out.append(
            {
                "threshold": threshold,
                "queries": len(stream),
                "hit_rate": float(hits_arr.mean()),
                "hit_rate_by_kind": {
                    k: float(hits_arr[kinds_arr == k].mean()) for k in ("original", "repeat", "paraphrase")
                },
                "hits_from_another_item": int(wrong_item),
                "score_fresh": float(np.mean(fresh.score)),
                "score_cached": float(np.mean(cached_score)),
                "score_change_ci": [lo, hi],
                "p50_ms_fresh": float(np.median(fresh.ms)),
                "p50_ms_hit": float(np.median(hit_ms)) if hit_ms else None,
                "p50_ms_miss": float(np.median(miss_ms)),
            }
        )
    return out


@dataclass
class Fresh:
    """The stream decided without a cache: per query, its score, decision time (ms), the model logits
    and the time (ms) computing them took."""

    score: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)
    logits_ms: list[float] = field(default_factory=list)


def _fresh(head: Head, encoder: Encoder, known: np.ndarray, stream: Any, scores: np.ndarray) -> Fresh:
    """Each query decided without a cache."""
    fresh = Fresh()
    for row, text, _ in stream:
        t = time.perf_counter()
        emb = encoder.encode([text])
        before_logits = time.perf_counter()
        logits = head.logits(emb)[0, : head.n_models]
        fresh.logits_ms.append((time.perf_counter() - before_logits) * 1e3)
        choice = head.pick(logits[None], known[row][None])[0]
        fresh.ms.append((time.perf_counter() - t) * 1e3)
        fresh.score.append(scores[row, choice])
        fresh.logits.append(logits)
    return fresh


def _cached(
    head: Head, encoder: Encoder, known: np.ndarray, stream: Any, scores: np.ndarray, threshold: float, fresh: Fresh
) -> tuple[list[float], list[float], list[float], list[str], list[bool], int]:
    """The stream through a decision cache at ``threshold``: each query's score, the hit and miss
    times (ms), each query's kind and whether it hit, and how many hits came from another item.

    A miss uses the logits the fresh pass computed for the same query (the same computation on the
    same text, so the same bits) instead of computing them once per threshold; its time is this
    pass's own work plus the time those logits took in the fresh pass."""
    cache = DecisionCache(threshold=threshold, max_size=4096, ttl_s=3600)
    cached_score: list[float] = []
    hit_ms: list[float] = []
    miss_ms: list[float] = []
    kinds: list[str] = []
    hits: list[bool] = []
    wrong_item = 0
    for i, (row, text, kind) in enumerate(stream):
        t = time.perf_counter()
        emb = encoder.encode([text])
        value = cache.get(emb)
        if value is None:
            logits = fresh.logits[i]
            cache.put(emb, (row, logits))
        else:
            cached_row, logits = cast(tuple[int, np.ndarray], value)  # what this loop put
            wrong_item += cached_row != row
        choice = head.pick(logits[None], known[row][None])[0]
        elapsed = (time.perf_counter() - t) * 1e3
        if value is None:
            miss_ms.append(elapsed + fresh.logits_ms[i])
        else:
            hit_ms.append(elapsed)
        cached_score.append(scores[row, choice])
        kinds.append(kind)
        hits.append(value is not None)
    return cached_score, hit_ms, miss_ms, kinds, hits, wrong_item
