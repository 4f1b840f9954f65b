"""WordPiece (`tokenizer.ggml.model = "bert"`) with Hugging Face BertNormalizer + BertPreTokenizer semantics.

GGUF stores BERT vocabularies in "phantom space" form (engine.md §3.5): word-initial pieces carry a "▁"
prefix, "##" continuation prefixes are removed, "[...]" tokens stay as they are. Normalization follows HF
(sentence-transformers, the reference of the embedding oracle), not llama.cpp, whose WPM differs on rarer text
(measured against llama-cpp-python 0.3.36): its NFD keeps only a decomposition's first code point (a Hangul
syllable loses its vowel and final), it also drops spacing and enclosing marks (Mc, Me), keeps unassigned code
points (the word becomes [UNK]) and has no 100-character word limit.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from engine.tokenizer.special import TokenType

SPACE = "▁"
SPECIAL_DEFAULTS = {"cls": 101, "unknown": 100, "seperator": 102, "padding": 0, "mask": 103}
MAX_WORD_CHARS = 100  # HF `max_input_chars_per_word`: longer words become [UNK]
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# HF tokenizers' ranges (0x2B920, not 0x2B820, is what its Rust code has).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # fmt: skip


def vocab_txt_to_gguf_tokens(lines: list[str]) -> list[str]:
    """BERT vocab.txt lines → GGUF phantom-space tokens (as llama.cpp's and Ollama's converters write)."""
    return [_phantom(line.rstrip("\r\n")) for line in lines]


def vocab_txt_token_types(lines: list[str]) -> list[int]:
    """vocab.txt token types: the five BERT specials CONTROL (as llama.cpp's converter), others NORMAL."""
    return [TokenType.CONTROL if line.rstrip("\r\n") in BERT_SPECIALS else TokenType.NORMAL for line in lines]


def _phantom(token: str) -> str:
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return SPACE + token


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _is_punctuation(ch: str) -> bool:
    """HF `is_bert_punc`: ASCII punctuation (incl. $ + < = > ^ ` | ~) or any Unicode P* category."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase), in HF's order."""
    out = []
    for ch in text:
        cp = ord(ch)
        if ch in "\t\n\r":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch).startswith("C"):
            continue
        elif ch.isspace():
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    # Per character, like HF (str.lower would apply the final-sigma rule: "Σ" at a word end → "ς").
    return "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: split on whitespace, then isolate every punctuation character."""
    words: list[str] = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punctuation(ch):
                if i > start:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPieceModel:
    """Greedy longest-match-first WordPiece over a phantom-space vocabulary."""

    def __init__(self, tokens: Sequence[str], vocab: dict[str, int], unk_id: int | None) -> None:
        self.add_bos_default = True
        self.strips_leading_space = True  # the phantom space of the first word
        self._tokens = tokens
        self._vocab = vocab
        self._unk_id = unk_id
        self._max_len = max((len(t) for t in tokens), default=1)

    @classmethod
    def from_metadata(
        cls, md: dict, tokens: Sequence[str], vocab: dict[str, int], unk_id: int | None
    ) -> WordPieceModel:
        return cls(tokens, vocab, unk_id)

    def encode_fragment(self, text: str, after_special: bool) -> list[int]:
        """Token ids of one raw text fragment (without [CLS]/[SEP])."""
        out: list[int] = []
        for word in pre_tokenize(normalize(text)):
            ids = self._encode_word(word) if len(word) <= MAX_WORD_CHARS else None
            if ids is not None:
                out.extend(ids)
            elif self._unk_id is not None:
                out.append(self._unk_id)
        return out

    def _encode_word(self, word: str) -> list[int] | None:
        """Longest vocabulary prefix of "▁"+word, then of each remainder; None if any position fails."""
        s = SPACE + word
        ids = []
        start = 0
        while start < len(s):
            # The first piece must cover at least one character of the word besides the "▁".
            for end in range(min(len(s), start + self._max_len), max(start, 1), -1):
                token_id = self._vocab.get(s[start:end])
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:
                return None
        return ids

    def piece_bytes(self, token_id: int, token_type: int) -> bytes:
        """NORMAL: text with "▁" → " " (continuation pieces have none); other types render empty."""
        if token_type != TokenType.NORMAL:
            return b""
        return self._tokens[token_id].replace(SPACE, " ").encode("utf-8")
