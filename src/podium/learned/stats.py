"""Bootstrap intervals and paired tests over items, for replay evaluation and safe model selection.

Every statistic here is a mean over items; resampling items (with replacement) gives its 95%
interval. A *paired* bootstrap resamples the same items for two methods, so the interval of their
difference is much tighter than the two intervals suggest.
"""

from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist

import numpy as np

N_BOOT = 1000
LEVEL = 0.95


@lru_cache(maxsize=6)
def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The (n_boot, n) resampled item indices; drawn once per (n, n_boot, seed): every interval over
    the same number of items resamples the same items (as before, when each call drew them anew)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    if n < 2**31:
        idx = idx.astype(np.int32)  # half the memory; the same indices
    idx.setflags(write=False)
    return idx


COUNT_CELLS = 1 << 25  # largest (n_boot × n) draw-count matrix kept (128 MiB of float32)


@lru_cache(maxsize=4)
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) float32: how often each item is drawn in each resample of :func:`_resample_index`."""
    idx = _resample_index(n, n_boot, seed)
    counts = np.empty((n_boot, n), dtype=np.float32)
    for b in range(n_boot):
        counts[b] = np.bincount(idx[b], minlength=n)
    counts.setflags(write=False)
    return counts


def _exact_in_float32(values: np.ndarray, n_boot: int) -> bool:
    """Whether ``values`` are integers so small that every resample's sum is exact in float32 (and float64),
    and few enough that the draw counts fit in :data:`COUNT_CELLS`."""
    if not len(values) or n_boot * len(values) > COUNT_CELLS:
        return False
    top = float(np.abs(values).max())
    return top * len(values) < 2.0**24 and bool(np.array_equal(values, np.round(values)))


def bootstrap_means(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot,) means of ``values`` (n,) over item resamples; all rows of a 2-D ``values`` (k, n) at once.

    Integer-valued ``values`` (0/1 scores and their differences) take a shortcut with the same bits:
    each resample's sum is an integer below 2²⁴, which every order of addition (the mean's pairwise
    sum, a float32 product with the draw counts) computes exactly."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    if n == 0:
        return np.zeros(n_boot)
    if values.ndim == 1 and _exact_in_float32(values, n_boot):
        sums = _resample_counts(n, n_boot, seed) @ values.astype(np.float32)
        exact: np.ndarray = sums.astype(np.float64) / n
        return exact
    idx = _resample_index(n, n_boot, seed)
    if values.ndim == 1:
        means: np.ndarray = values[idx].mean(axis=1)
        return means
    # (k, n_boot): counts per item per resample keep memory at n_boot × n
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    out: np.ndarray = values @ counts.T / n
    return out


def interval(values: np.ndarray, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over items."""
    boots = bootstrap_means(values, n_boot, seed)
    tail = (1 - level) / 2
    return float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))


def paired_interval(
    a: np.ndarray, b: np.ndarray, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Interval of mean(a) − mean(b) for per-item values of two methods on the same items."""
    return interval(np.asarray(a, float) - np.asarray(b, float), level, n_boot, seed)


def lower_bound(diff: np.ndarray, alpha: float, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """One-sided lower ``1 − alpha`` bound of mean(diff) over items: mean − z(alpha) × bootstrap SE.

    The normal quantile (rather than the bootstrap percentile) keeps the bound stable at the small
    ``alpha`` a Bonferroni correction over many candidates asks for.
    """
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return 0.0
    se = float(bootstrap_means(diff, n_boot, seed).std())
    return float(diff.mean() - NormalDist().inv_cdf(1 - alpha) * se)
