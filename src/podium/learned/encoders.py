"""Text encoders (text -> vector) for the learned coordinator, and an on-disk embedding cache.

Encoders are pluggable: anything with ``name``, ``dim``, ``spec()`` and ``encode(texts)`` works,
and :func:`get_encoder` builds one from its spec (the dict a head file records). The shipped
``hashed`` encoder needs no network, no weights and no heavy dependency: signed feature hashing of
byte n-grams and lower-cased words, log-scaled and L2-normalised. It encodes a 256-token text in
well under a millisecond.

:class:`EmbeddingCache` stores vectors on disk keyed by the SHA-256 of the text, one folder per
encoder spec, under the podium home (``$PODIUM_HOME``, else the user data dir).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from ..paths import podium_home as podium_home  # re-exported: callers import it from here too

_WORD = re.compile(r"\w+", re.UNICODE)


class Encoder(Protocol):
    """Turns texts into fixed-size float32 vectors."""

    name: str
    dim: int

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder (recorded in head files)."""
        ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """An ``(len(texts), dim)`` float32 array."""
        ...


class HashedNgramEncoder:
    """Signed feature hashing of byte n-grams (``ngrams``) and words, log(1+count), L2-normalised.

    ``max_chars`` caps the text length read (the start and the end are kept, since the question
    of a long prompt is often at its end).
    """

    name = "hashed"

    def __init__(self, dim: int = 2048, ngrams: Iterable[int] = (3, 4), max_chars: int = 2000) -> None:
        if dim < 16:
            raise UsageError("hashed encoder: dim must be at least 16")
        self.dim = int(dim)
        self.ngrams = tuple(int(n) for n in ngrams)
        self.max_chars = int(max_chars)
        self._mults = {n: (np.uint64(1000003) ** np.arange(n, dtype=np.uint64)) for n in self.ngrams}

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "ngrams": list(self.ngrams), "max_chars": self.max_chars}

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        half = self.max_chars // 2
        return text[:half] + " " + text[-half:]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), 256):  # a chunk's arrays stay a few MB
            out[start : start + 256] = self._encode_chunk(texts[start : start + 256])
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """The vector of one text."""
        vector: np.ndarray = self.encode([text])[0]
        return vector

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        """Every text of the chunk at once: the hashes of all texts, then one count per (text, bucket).

        The vectors are the same bits as hashing one text at a time: the hashes are integers (any order
        of their uint64 additions wraps to the same value), the counts are sums of ±1, exact in float64,
        and each row's norm is the same ``np.linalg.norm`` of the same row."""
        lowered = [self._clip(t).lower() for t in texts]
        hashes, owners = self._ngram_hashes([t.encode("utf-8") for t in lowered])
        words = [_WORD.findall(t) for t in lowered]
        crc = map(zlib.crc32, map(str.encode, itertools.chain.from_iterable(words)))
        hashes.append(np.fromiter(crc, dtype=np.uint64) * np.uint64(2654435761))
        owners.append(np.repeat(np.arange(len(words)), [len(w) for w in words]))
        h, owner = np.concatenate(hashes), np.concatenate(owners)
        mixed = h ^ (h >> np.uint64(29))
        dim = np.uint64(self.dim)
        bucket = mixed & (dim - np.uint64(1)) if self.dim & (self.dim - 1) == 0 else mixed % dim
        sign = ((mixed >> np.uint64(40)) & np.uint64(1)).astype(np.float64) * 2.0 - 1.0
        cells = owner * self.dim + bucket.astype(np.int64)
        counts = np.bincount(cells, weights=sign, minlength=len(texts) * self.dim).reshape(len(texts), self.dim)
        magnitude = np.abs(counts)  # log1p of the few distinct counts, looked up
        log1p = np.log1p(np.arange(int(magnitude.max(initial=0)) + 1, dtype=np.float64))
        vec = np.sign(counts) * log1p[magnitude.astype(np.intp)]
        for row in vec:
            norm = np.linalg.norm(row)
            if norm > 0:
                row /= norm
        return vec.astype(np.float32)

    def _ngram_hashes(self, raw: list[bytes]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Hash of every byte n-gram inside one text, and the text it belongs to."""
        lengths = np.array([len(b) for b in raw], dtype=np.int64)
        data = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.uint64)
        owner = np.repeat(np.arange(len(raw)), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        left = np.repeat(lengths, lengths) - (np.arange(len(data)) - starts)  # bytes to the end of its text
        hashes, owners = [], []
        for n, mult in self._mults.items():
            m = len(data) - n + 1
            if m <= 0:
                continue
            h = data[:m] * mult[0]
            for j in range(1, n):
                h += data[j : j + m] * mult[j]
            inside = left[:m] >= n
            hashes.append(h[inside] * np.uint64(n * 7919 + 1))
            owners.append(owner[:m][inside])
        return hashes, owners


ENCODERS: dict[str, Callable[..., Encoder]] = {"hashed": HashedNgramEncoder}


def register_encoder(name: str, factory: Callable[..., Encoder]) -> None:
    """Make ``get_encoder({"name": name, ...})`` build encoders with ``factory(**params)``."""
    ENCODERS[name] = factory


def get_encoder(spec: dict[str, Any] | str) -> Encoder:
    """Build an encoder from a spec dict (``{"name": "hashed", "dim": 2048}``) or a bare name."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name == "minilm" and name not in ENCODERS:
        import podium.learned.encoders_minilm  # optional extra; registers itself
    if name == "smollm2" and name not in ENCODERS:
        import podium.learned.encoders_smollm2  # noqa: F401  (the local extra; registers itself)
    if name not in ENCODERS:
        raise UsageError(f"unknown encoder '{name}'; known encoders: {', '.join(sorted(ENCODERS))}")
    try:
        return ENCODERS[name](**spec)
    except TypeError as exc:
        raise UsageError(f"encoder '{name}': bad parameters {spec} ({exc})") from None


def text_key(text: str) -> bytes:
    """The cache key of a text: its SHA-256 digest."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Vectors on disk, keyed by text hash, in one folder per encoder spec (shards of ``.npz``)."""

    def __init__(self, encoder: Encoder, root: Path | None = None) -> None:
        self.encoder = encoder
        spec_id = hashlib.sha256(json.dumps(encoder.spec(), sort_keys=True).encode()).hexdigest()[:16]
        self.folder = (root or podium_home() / "embeddings") / f"{encoder.name}-{spec_id}"
        self._index: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            self._index = {}
            shards = sorted(self.folder.glob("[!.]*.npz")) if self.folder.is_dir() else []
            for shard in shards:  # ".NAME.PID.tmp.npz": another process is still writing it
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vecs = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                    continue  # a torn or foreign file: recompute what it held
                for key, vec in zip(keys, vecs):
                    self._index[key.tobytes()] = vec
        return self._index

    def encode(self, texts: list[str], progress: Callable[[str], None] | None = None, chunk: int = 256) -> np.ndarray:
        """Vectors of ``texts``: cached ones read back, the rest encoded and stored in shards of ``chunk``
        (an interrupted run keeps what it encoded), with items/s and ETA sent to ``progress``."""
        index = self._load()
        keys = [text_key(t) for t in texts]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in index}.values())
        started = time.perf_counter()
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            fresh = self.encoder.encode([texts[i] for i in part])
            self._store([keys[i] for i in part], fresh)
            for i, vec in zip(part, fresh):
                index[keys[i]] = vec
            done = start + len(part)
            if progress and len(todo) > chunk:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress(
                    f"{self.encoder.name}: encoded {done}/{len(todo)} new texts, {rate:.1f}/s, "
                    f"ETA {(len(todo) - done) / rate:.0f} s"
                )
        return np.stack([index[k] for k in keys]) if keys else np.zeros((0, self.encoder.dim), np.float32)

    def _store(self, keys: list[bytes], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(b"".join(keys)).hexdigest()[:20]
        tmp = self.folder / f".{name}.{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32), vectors=vectors)
        os.replace(tmp, self.folder / f"{name}.npz")
