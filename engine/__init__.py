"""pollama's inference engine: GGUF in, tokens and logits out. Knows nothing of HTTP, names or manifests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.jit_cache import drop_stale_kernels

drop_stale_kernels()   # before any module below compiles or loads a cached kernel

from engine.gguf import GGUFError, GGUFFile  # noqa: E402
from engine.lora import apply_lora  # noqa: E402
from engine.models import from_gguf  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402


@dataclass
class LoadedModel:
    model: Any                      # an engine.models.<arch> model instance
    tokenizer: Tokenizer
    metadata: dict[str, Any]        # the GGUF metadata (plain Python values)
    architecture: str
    context_length: int             # the context the model was trained with


def load_model(path: str | os.PathLike, adapters: Sequence[str | os.PathLike] = ()) -> LoadedModel:
    """Read a GGUF file, repack its weights for the kernels and build its tokenizer; the file is closed after.

    ``adapters``: LoRA GGUF files applied in order at scale 1.0 (a Modelfile's ADAPTER).
    """
    with GGUFFile(path) as gguf:
        metadata = dict(gguf.metadata)
        model = from_gguf(gguf)
        tokenizer = Tokenizer.from_metadata(metadata)
        arch = gguf.architecture
    for adapter in adapters:
        apply_lora(model, adapter)
    return LoadedModel(model, tokenizer, metadata, arch, int(metadata.get(f"{arch}.context_length", 2048)))


__all__ = ["GGUFError", "LoadedModel", "load_model"]
