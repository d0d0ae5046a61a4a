"""The hashed encoder encodes a batch of texts at once; every vector must be the same bits as the
one-text-at-a-time code it replaced (kept here as the reference), since cached encodings, trained
heads and ``eval replay``'s numbers all rest on them."""

from __future__ import annotations

import re
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from podium.learned.encoders import HashedNgramEncoder

_WORD = re.compile(r"\w+", re.UNICODE)


def reference_vector(enc: HashedNgramEncoder, text: str) -> np.ndarray:
    """The encoder as it was: n-gram windows summed per text, ``np.add.at``, ``log1p`` per row."""
    clipped = enc._clip(text).lower()
    data = np.frombuffer(clipped.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    parts = []
    for n in enc.ngrams:
        mult = np.uint64(1000003) ** np.arange(n, dtype=np.uint64)
        if len(data) >= n:
            windows = np.lib.stride_tricks.sliding_window_view(data, n)
            parts.append((windows * mult).sum(axis=1) * np.uint64(n * 7919 + 1))
    words = _WORD.findall(clipped)
    if words:
        parts.append(np.array([zlib.crc32(w.encode("utf-8")) for w in words], dtype=np.uint64) * np.uint64(2654435761))
    h = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    vec = np.zeros(enc.dim, dtype=np.float64)
    if len(h):
        mixed = h ^ (h >> np.uint64(29))
        idx = (mixed % np.uint64(enc.dim)).astype(np.int64)
        np.add.at(vec, idx, np.where((mixed >> np.uint64(40)) & np.uint64(1), 1.0, -1.0))
        vec = np.sign(vec) * np.log1p(np.abs(vec))
        norm = np.linalg.norm(vec)
        if norm > 0:
            vec /= norm
    return vec.astype(np.float32)


EDGES = ["", "a", "ab", "abc", "abcd", " ", "é" * 5, "日本語のテキスト", "Ünïcödé wörds, ÀÉÎ", "x" * 5000, "a b " * 900]
EDGES += ["What is 17 * 23?\nAnswer with a number.", "the the the the the", "\t\n  spaced\t out  \n"]


def test_batch_matches_one_text_at_a_time_on_edge_texts() -> None:
    for enc in (HashedNgramEncoder(), HashedNgramEncoder(dim=100, ngrams=(1, 2, 5), max_chars=50)):
        batch = enc.encode(EDGES * 30)  # several chunks of 256, a partial last one
        for i, text in enumerate(EDGES * 30):
            assert batch[i].tobytes() == reference_vector(enc, text).tobytes(), (enc.dim, text[:40])
        assert enc.encode_one(EDGES[8]).tobytes() == batch[8].tobytes()
    assert HashedNgramEncoder().encode([]).shape == (0, 2048)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=12), st.sampled_from([2048, 64, 37]))
def test_batch_matches_one_text_at_a_time_on_any_text(texts: list[str], dim: int) -> None:
    enc = HashedNgramEncoder(dim=dim, max_chars=120)
    batch = enc.encode(texts)
    for text, row in zip(texts, batch):
        assert row.tobytes() == reference_vector(enc, text).tobytes()
