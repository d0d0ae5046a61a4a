"""Exact memoisation of pure array computations inside one process.

``podium eval replay`` asks the same question many times: the kNN features of the test rows for
every head trained on the same split, the PCA of the same rows when the RouteLLM slice keeps every
row, the neighbours of the same items in the same memory. A :class:`Memo` keys each result by a
content fingerprint of its inputs (a 128-bit XXH3 digest of the array bytes, shape and dtype; other
values by ``repr``), so a hit returns the result of the very same computation on the very same input:
numbers are identical to the digit, not approximately equal. XXH3 is not cryptographic, and need not
be: the inputs are the process's own arrays, and it hashes ~11 GB/s where SHA-256 managed 1.5
(fingerprints were 6% of ``eval replay``'s CPU). Cached arrays are made read-only, so a caller
that would modify one fails loudly instead of corrupting later hits.

Only inputs of at least :data:`MIN_ROWS` rows are worth memoising: a single live decision is
cheaper to compute than to fingerprint.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ..errors import missing_extra

try:
    import xxhash
except ImportError:  # a train extra installed before xxhash joined it
    raise missing_extra("xxhash", "train") from None

MIN_ROWS = 32
T = TypeVar("T")


def fingerprint(*parts: Any) -> bytes:
    """A digest of ``parts``: arrays by shape, dtype and bytes, anything else by ``repr``."""
    digest = xxhash.xxh3_128()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            digest.update(f"a{arr.shape}{arr.dtype.str}".encode())
            digest.update(arr.reshape(-1).view(np.uint8).data if arr.size else b"")
        else:
            digest.update(f"r{part!r}".encode())
        digest.update(b"\0")
    return digest.digest()


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


def _freeze(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for v in value:
            _freeze(v)
    return value


class Memo:
    """A least-recently-used map from fingerprints to results, bounded in bytes of arrays held."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, key: bytes, compute: Callable[[], T]) -> T:
        """The cached result for ``key``, else ``compute()`` (stored, read-only)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            value: T = self._items[key]
            return value
        self.misses += 1
        value = _freeze(compute())
        size = _nbytes(value)
        if size <= self.max_bytes:
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= _nbytes(old)
        return value

    def for_rows(self, n_rows: int, compute: Callable[[], T], *parts: Any) -> T:
        """``compute()`` on fewer than :data:`MIN_ROWS` rows; else the result memoised under
        ``fingerprint(*parts)`` (``parts`` name every input of ``compute``)."""
        if n_rows < MIN_ROWS:
            return compute()
        return self.get(fingerprint(*parts), compute)

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
