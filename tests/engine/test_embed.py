"""engine.embed on a decoder model (the real SmolLM2): mean of the output-normed hidden states, L2-normalized."""

from __future__ import annotations

import numpy as np
import pytest

from engine.embed import embed
from engine.ops import rms_norm

TEXTS = ["The cat sat on the mat.", "A cat was sitting on the rug.",
         "Quarterly revenue rose by four percent.", "The stock market fell sharply today."]


@pytest.fixture(scope="module")
def token_lists(smollm2):
    return [smollm2.tokenizer.encode(t, add_special=True) for t in TEXTS]


@pytest.fixture(scope="module")
def vectors(smollm2, token_lists):
    return embed(smollm2, token_lists)


def test_unit_vectors_of_model_width(vectors, smollm2):
    assert vectors.shape == (4, smollm2.model.cfg.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_deterministic_and_independent_of_the_batch(smollm2, token_lists, vectors):
    assert np.array_equal(embed(smollm2, token_lists), vectors)
    assert np.array_equal(embed(smollm2, token_lists[2:3])[0], vectors[2])


def test_similar_texts_score_higher_than_unrelated(vectors):
    sim = vectors @ vectors.T
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])   # the two cat sentences
    assert sim[2, 3] > max(sim[0, 2], sim[1, 2], sim[0, 3], sim[1, 3])   # the two finance sentences


def test_is_the_mean_of_output_normed_hidden_states(smollm2, token_lists, vectors):
    model, tokens = smollm2.model, token_lists[1]
    hidden = model.hidden(np.array(tokens), 0, model.new_cache(64))
    pooled = rms_norm(hidden, model.output_norm, model.cfg.norm_eps).mean(axis=0)
    raw = embed(smollm2, [tokens], normalize=False)[0]
    assert np.allclose(raw, pooled, rtol=1e-5, atol=1e-5)
    assert np.allclose(vectors[1], pooled / np.linalg.norm(pooled), atol=1e-6)


def test_empty_request_and_bad_inputs(smollm2):
    assert embed(smollm2, []).shape == (0, smollm2.model.cfg.dim)
    with pytest.raises(ValueError, match="0 tokens"):
        embed(smollm2, [[1, 2], []])
    with pytest.raises(ValueError, match="cannot embed"):
        embed(smollm2, [[1] * (smollm2.context_length + 1)])
