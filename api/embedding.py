"""Embeddings for /api/embed, the legacy /api/embeddings and OpenAI's /v1/embeddings.

A request's inputs are tokenized here (on the HTTP thread, as generate's prompt is), cut to the context by
Ollama's rules, and then embedded together: one ``runner.call`` per request, so the model sees the whole batch
at once and the engine thread is never handed one input at a time. Normalizing and ``dimensions`` follow
Ollama's EmbedHandler: L2-normalize, then keep the first ``dimensions`` values and normalize again.

Also the capability check for generate/chat: a model that pools (bert, or any GGUF with ``<arch>.pooling_type``)
is an embedding model and has no ``completion`` capability.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from api import options
from api.errors import APIError, bad_request
from api.model_pool import Loaded, ModelRecord
from api.schemas import field, model_field
from engine import LoadedModel
from engine.embed import embed, l2_normalize
from engine.gguf import GGUFError, GGUFFile
from engine.runner import EngineError
from engine.tokenizer import Tokenizer

INVALID_INPUT = "invalid input type"
TOO_LONG = "the input length exceeds the context length"


@dataclass(frozen=True)
class EmbedRequest:
    """POST /api/embed."""

    model: str
    texts: list[str]              # [] = load the model only
    truncate: bool
    dimensions: int | None        # None or 0: the model's full width
    options: dict | None
    keep_alive: Any


@dataclass(frozen=True)
class EmbeddingsRequest:
    """POST /api/embeddings (legacy): one prompt, an unnormalized vector."""

    model: str
    prompt: str                   # "" = load the model only
    options: dict | None
    keep_alive: Any


def parse_embed(body: dict) -> EmbedRequest:
    dimensions = field(body, "dimensions", int)
    if dimensions is not None and dimensions < 0:
        raise bad_request("dimensions must be a non-negative integer")
    return EmbedRequest(model=_required_model(body), texts=parse_input(body.get("input")),
                        truncate=field(body, "truncate", bool, True), dimensions=dimensions or None,
                        options=field(body, "options", dict), keep_alive=body.get("keep_alive"))


def parse_embeddings(body: dict) -> EmbeddingsRequest:
    return EmbeddingsRequest(model=_required_model(body), prompt=field(body, "prompt", str, ""),
                             options=field(body, "options", dict), keep_alive=body.get("keep_alive"))


def parse_input(value: Any) -> list[str]:
    """``input`` as a list of texts: a string, or a list of strings; "" / [] / absent mean none (load only)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad_request(INVALID_INPUT)


def num_ctx_for(record: ModelRecord, request_options: dict | None) -> int:
    """num_ctx from the defaults, the model's parameters and the request's options (400 on a bad option)."""
    return options.build(options.merge(record.params, request_options)).limits.num_ctx


def embed_texts(entry: Loaded, texts: Sequence[str], truncate: bool = True, dimensions: int | None = None, *,
                num_ctx: int | None = None, normalize: bool = True) -> tuple[np.ndarray, int]:
    """Embed ``texts`` with the loaded model as one batch: ((len(texts), dim) float32, tokens embedded).

    ``truncate``: cut inputs longer than min(num_ctx, the model's context) (else 400 TOO_LONG).
    ``dimensions``: keep that many leading values (only with ``normalize``, which re-normalizes them).
    ``num_ctx``: None takes the model's parameters and the defaults. Call with the model acquired.
    """
    if not texts:
        return np.empty((0, 0), np.float32), 0
    loaded = entry.model
    limit = min(num_ctx or num_ctx_for(entry.record, None), loaded.context_length)
    token_lists = [fit_tokens(loaded.tokenizer, text, limit, truncate) for text in texts]
    try:
        vectors = entry.runner.call(lambda _model: _embed_batch(loaded, token_lists, normalize))   # (n, dim)
    except EngineError as exc:
        raise APIError(500, f"embedding failed: {exc}") from None
    if normalize and dimensions and dimensions < vectors.shape[1]:
        vectors = l2_normalize(vectors[:, :dimensions])
    return vectors, sum(len(tokens) for tokens in token_lists)


def fit_tokens(tokenizer: Tokenizer, text: str, limit: int, truncate: bool) -> list[int]:
    """``text`` tokenized as the model reads it (BOS / [CLS] … [SEP]), at most ``limit`` tokens.

    Cutting keeps a trailing EOS / [SEP] the tokenizer appended, as Ollama does by reserving room for it.
    """
    tokens = tokenizer.encode(text, add_special=True, parse_special=True)
    if not tokens:
        raise bad_request("cannot embed an empty input")
    if len(tokens) <= limit:
        return tokens
    if not truncate:
        raise bad_request(TOO_LONG)
    appended_eos = tokenizer.add_eos and tokens[-1] == tokenizer.eos_id
    if appended_eos and limit > 1:
        return tokens[:limit - 1] + [tokens[-1]]
    return tokens[:limit]


def _embed_batch(loaded: LoadedModel, token_lists: list[list[int]], normalize: bool) -> np.ndarray:
    """Runs on the engine thread. Unnormalized vectors from a model that normalizes inside (bert's
    normalize_embeddings) come from a shallow copy sharing its weights, with that switch off."""
    cfg = getattr(loaded.model, "cfg", None)
    if not normalize and getattr(cfg, "normalize", False):
        raw = copy.copy(loaded.model)
        raw.cfg = dataclasses.replace(cfg, normalize=False)
        loaded = dataclasses.replace(loaded, model=raw)
    return embed(loaded, token_lists, normalize=normalize)


# -- capabilities ------------------------------------------------------------------------------------------

def is_embedding_model(record: ModelRecord) -> bool:
    """True for a model that pools into sentence embeddings (bert, or a GGUF with ``<arch>.pooling_type``)."""
    return _pools(record.model_path)


def require_completion(record: ModelRecord, model: str, action: str) -> None:
    """400 ``"<model>" does not support generate`` (``action`` "generate" or "chat") for an embedding model,
    before it is loaded: as Ollama, an embedding model has no ``completion`` capability."""
    if is_embedding_model(record):
        raise bad_request(f"\"{model}\" does not support {action}")


@lru_cache(maxsize=64)
def _pools(path: Path) -> bool:
    """Cached by blob path: blobs are content-addressed, so a path's answer never changes."""
    try:
        with GGUFFile(path) as gguf:
            arch = gguf.architecture
            return arch == "bert" or f"{arch}.pooling_type" in gguf.metadata
    except (GGUFError, OSError):
        return False               # loading it will report what is wrong


def _required_model(body: dict) -> str:
    name = model_field(body)
    if not name:
        raise bad_request("model is required")
    return name
