"""SentencePiece-BPE (`tokenizer.ggml.model = "llama"`): Llama 2, TinyLlama, Mistral ≤ v0.3, Gemma, Phi-3.

Per raw text fragment (engine.md §3.3, llama.cpp `llm_tokenizer_spm_session`): optional leading space,
" " → "▁", then merge adjacent symbols whose concatenation is a vocabulary token, highest score first
(leftmost on ties); symbols that never became a token fall back to `<0xHH>` byte tokens.

llama.cpp merges over the whole fragment at once. We cut the fragment into words before each "▁" whose
preceding character never precedes "▁" inside any token: no token can span such a cut, so no merge ever
crosses it and merging each word on its own gives the same result — and lets us cache per word.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import regex

from engine.tokenizer.merge import merge_pairs
from engine.tokenizer.special import TokenType

SPACE = "▁"  # U+2581, SentencePiece's visible space
SPECIAL_DEFAULTS = {"bos": 1, "eos": 2, "unknown": 0}  # llama.cpp's defaults for SPM vocabularies
CACHE_MAX_ENTRIES = 1 << 16
BYTE_TOKEN = regex.compile("<0x[0-9A-Fa-f]{2}>")


def word_splitter(tokens: Sequence[str]) -> regex.Pattern:
    """Zero-width pattern matching the safe cut points (see module docstring) in escaped text."""
    joins = {t[i - 1] for t in tokens if t.find(SPACE, 1) > 0 for i in range(1, len(t)) if t[i] == SPACE}
    if not joins:
        return regex.compile(f"(?={SPACE})")
    chars = "".join(regex.escape(c) for c in sorted(joins))
    return regex.compile(f"(?<=[^{chars}])(?={SPACE})")


class SpmModel:
    """SentencePiece-BPE over a GGUF vocabulary with scores."""

    def __init__(self, tokens: Sequence[str], vocab: dict[str, int], scores: Sequence[float], unk_id: int | None,
                 add_space_prefix: bool) -> None:  # fmt: skip
        self.add_bos_default = True
        self.add_space_prefix = add_space_prefix
        self.strips_leading_space = add_space_prefix
        self._tokens = tokens
        self._vocab = vocab
        self._scores = scores
        self._byte_ids = [self._byte_token(b, unk_id) for b in range(256)]
        self._splitter = word_splitter(tokens)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_metadata(
        cls, md: dict, tokens: Sequence[str], vocab: dict[str, int], unk_id: int | None
    ) -> SpmModel:
        scores = md.get("tokenizer.ggml.scores")
        scores = np.zeros(len(tokens), np.float32) if scores is None else np.asarray(scores, dtype=np.float32)
        add_space_prefix = bool(md.get("tokenizer.ggml.add_space_prefix", True))
        # A memoryview of the float32 array (usually the metadata's own) indexes to the same Python floats as
        # .tolist() would, without a float object per token (8 MB for Gemma 3's 262k tokens).
        return cls(tokens, vocab, memoryview(np.ascontiguousarray(scores)), unk_id, add_space_prefix)

    def _byte_token(self, b: int, unk_id: int | None) -> int | None:
        """`<0xHH>`, else the single-character token for ASCII (llama.cpp `byte_to_token`), else unk."""
        single = self._vocab.get(chr(b)) if b < 0x80 else None
        return self._vocab.get(f"<0x{b:02X}>", unk_id if single is None else single)

    def encode_fragment(self, text: str, after_special: bool) -> list[int]:
        """Token ids of one raw text fragment; ``after_special``: first fragment or just after a special."""
        if self.add_space_prefix and after_special:
            text = " " + text
        out: list[int] = []
        cache = self._cache
        for word in self._splitter.split(text.replace(" ", SPACE)):
            if not word:
                continue
            ids = cache.get(word)
            if ids is None:
                if len(cache) >= CACHE_MAX_ENTRIES:
                    cache.clear()
                ids = cache[word] = self._encode_word(word)
            out.extend(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        vocab, scores = self._vocab, self._scores

        def priority(a: str, b: str) -> float | None:
            token_id = vocab.get(a + b)
            return None if token_id is None else -scores[token_id]

        ids: list[int] = []
        for sym in merge_pairs(list(word), priority):
            token_id = vocab.get(sym)
            if token_id is not None:
                ids.append(token_id)
            else:  # only single characters can miss: every merge result is a token
                ids.extend(i for i in (self._byte_ids[b] for b in sym.encode("utf-8")) if i is not None)
        return tuple(ids)

    def piece_bytes(self, token_id: int, token_type: int) -> bytes:
        """NORMAL: text with "▁" → " "; BYTE `<0xHH>`: that byte; other types render empty."""
        text = self._tokens[token_id]
        if token_type == TokenType.NORMAL:
            return text.replace(SPACE, " ").encode("utf-8")
        if token_type == TokenType.BYTE and BYTE_TOKEN.fullmatch(text):
            return bytes((int(text[3:5], 16),))
        return b""
