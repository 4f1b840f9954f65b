"""Real tokenizers (metadata read once per session) and helpers shared by the tokenizer tests."""

from __future__ import annotations

import pytest

from engine.gguf import GGUFFile
from engine.tokenizer import Tokenizer
from engine.tokenizer.wordpiece import vocab_txt_to_gguf_tokens, vocab_txt_token_types


def read_metadata(path) -> dict:
    with GGUFFile(path) as f:
        return f.metadata


@pytest.fixture(scope="session")
def smollm2_md(smollm2_path) -> dict:
    return read_metadata(smollm2_path)


@pytest.fixture(scope="session")
def gemma3_md(gemma3_path) -> dict:
    return read_metadata(gemma3_path)


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_md) -> Tokenizer:
    return Tokenizer.from_metadata(smollm2_md)


@pytest.fixture(scope="session")
def gemma3_tok(gemma3_md) -> Tokenizer:
    return Tokenizer.from_metadata(gemma3_md)


@pytest.fixture(scope="session")
def minilm_md(all_minilm_dir) -> dict:
    """A bert GGUF metadata dict as the safetensors→GGUF converter writes it, from the model's vocab.txt."""
    lines = (all_minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {
        "tokenizer.ggml.model": "bert",
        "tokenizer.ggml.tokens": vocab_txt_to_gguf_tokens(lines),
        "tokenizer.ggml.token_type": vocab_txt_token_types(lines),
        "tokenizer.ggml.cls_token_id": 101,
        "tokenizer.ggml.seperator_token_id": 102,
        "tokenizer.ggml.unknown_token_id": 100,
        "tokenizer.ggml.padding_token_id": 0,
    }


@pytest.fixture(scope="session")
def minilm_tok(minilm_md) -> Tokenizer:
    return Tokenizer.from_metadata(minilm_md)
