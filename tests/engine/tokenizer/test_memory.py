"""What a tokenizer costs on top of the GGUF metadata it is built from: it shares the metadata's token list and
score array instead of copying them (Gemma 3: 262k tokens), and never modifies the metadata."""

from __future__ import annotations

import tracemalloc

from engine.tokenizer import Tokenizer
from engine.tokenizer.special import TokenType
from tests.engine.tokenizer.helpers import tiny_bpe_metadata


def test_gemma3_tokenizer_adds_little_to_its_metadata(gemma3_md):
    tokens = gemma3_md["tokenizer.ggml.tokens"]
    tracemalloc.start()
    try:
        tok = Tokenizer.from_metadata(gemma3_md)
        traced_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The vocab dict (262k entries and their int ids) is 15 MB of it; a list copy of the tokens (2 MB) and the
    # scores as Python floats (8 MB) made 27.6 MB.
    assert traced_bytes < 18e6
    assert tok.token_text(262143) is tokens[262143]                        # the metadata's own strings


def test_renaming_empty_tokens_leaves_the_metadata_alone():
    md = tiny_bpe_metadata({"": TokenType.USER_DEFINED})
    tok = Tokenizer.from_metadata(md)
    assert tok.token_text(256) == "[EMPTY_256]" and md["tokenizer.ggml.tokens"][256] == ""
