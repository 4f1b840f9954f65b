"""Test helpers: random strings and tiny synthetic vocabularies."""

from __future__ import annotations

import random
from collections.abc import Sequence

from engine.tokenizer.bpe import BYTE_TO_CHAR
from engine.tokenizer.special import TokenType

# Pieces random test strings are made of: scripts, digits, whitespace runs, punctuation, emoji with ZWJ and
# skin-tone modifiers, contractions, and chat-template special tokens.
PIECES = [
    *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " ", " ", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000",
    *".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", "...", "--", "==",
    *"éèàüößçñÉÜÅøłŁ", "é", "ΣΑΣ", "Σ", *"中文字日本語のテキ한국어Привет",
    "👍", "🏽", "\u200d", "😀", "👨\u200d👩\u200d👧", "🇺🇸", "∑", "²", "≤", "∞", "\u200b", "\x01",
    "'s", "'ll", "'T", "'RE", "hello", " world", " the", "ing", "123456", "3.14",
]  # fmt: skip


def random_texts(seed: int, count: int, pieces: list[str] = PIECES, max_pieces: int = 30) -> list[str]:
    """Deterministic random strings built from ``pieces``."""
    rng = random.Random(seed)
    return ["".join(rng.choices(pieces, k=rng.randint(1, max_pieces))) for _ in range(count)]


def tiny_bpe_metadata(specials: dict[str, TokenType], merges: Sequence[str] = (), **keys) -> dict:
    """A byte-level BPE vocabulary: the 256 byte chars, then ``specials`` (text → type), then one token per
    merge result. Extra ``keys`` are added as `tokenizer.ggml.<key>`."""
    tokens = [*BYTE_TO_CHAR.values(), *specials]
    types = [TokenType.NORMAL] * 256 + list(specials.values())
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
        types.append(TokenType.NORMAL)
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": list(merges)}  # fmt: skip
    md.update({f"tokenizer.ggml.{k}": v for k, v in keys.items()})
    return md
