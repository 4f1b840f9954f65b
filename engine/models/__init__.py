"""Architectures by GGUF ``general.architecture``; each module exports ARCH and a model class with from_gguf."""

from __future__ import annotations

from engine.gguf import GGUFError, GGUFFile
from engine.models import bert, gemma3, llama, qwen2

ARCHITECTURES = {m.ARCH: m for m in (llama, qwen2, gemma3, bert)}
MODEL_CLASSES = {llama.ARCH: llama.Llama, qwen2.ARCH: qwen2.Qwen2, gemma3.ARCH: gemma3.Gemma3, bert.ARCH: bert.Bert}


def from_gguf(gguf: GGUFFile):
    """Build the model for the file's architecture; GGUFError for one we do not implement."""
    arch = gguf.architecture
    if arch not in MODEL_CLASSES:
        raise GGUFError(f"unsupported model architecture '{arch}'")
    return MODEL_CLASSES[arch].from_gguf(gguf)
