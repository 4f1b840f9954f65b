"""Sentence embeddings from any loaded model.

Encoders (bert) pool inside the model (``model.embed``). Decoder models (llama, gemma3) have no pooling of their
own: as llama.cpp does for them, we take the final hidden states after the output norm (the LM head's input)
and average them over the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.ops import rms_norm

if TYPE_CHECKING:
    from engine import LoadedModel


def embed(loaded_model: LoadedModel, token_lists: Sequence[Sequence[int]], normalize: bool = True) -> np.ndarray:
    """One embedding per token list: (n, dim) float32, L2-normalized when ``normalize``.

    ValueError for an empty token list, one longer than the model's context, or a vector with NaN/Inf (Ollama
    refuses those too). Truncating long inputs is the caller's choice (the API's ``truncate`` option).
    """
    model = loaded_model.model
    if not token_lists:
        return np.empty((0, model.cfg.dim), np.float32)
    for tokens in token_lists:
        if not 0 < len(tokens) <= loaded_model.context_length:
            raise ValueError(f"cannot embed {len(tokens)} tokens (1 to {loaded_model.context_length})")
    if hasattr(model, "embed"):
        vectors = model.embed([list(tokens) for tokens in token_lists])
    else:
        vectors = np.stack([_decoder_mean(model, tokens) for tokens in token_lists])
    if not np.all(np.isfinite(vectors)):
        raise ValueError("the model produced NaN or infinite embedding values")
    return l2_normalize(vectors) if normalize else vectors


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by max(‖row‖, 1e-12), as Ollama's normalize."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _decoder_mean(model, tokens: Sequence[int]) -> np.ndarray:
    """Mean over positions of output_norm(hidden states): (dim,). A fresh cache: inputs never see each other."""
    cache = model.new_cache(len(tokens))
    hidden = model.hidden(np.asarray(tokens, dtype=np.int64), 0, cache)            # (T, dim)
    normed = rms_norm(hidden, model.output_norm, model.cfg.norm_eps)               # the LM head's input
    return normed.mean(axis=0, dtype=np.float64).astype(np.float32)
