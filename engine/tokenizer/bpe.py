"""GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`): SmolLM/SmolLM2, Qwen2, Llama 3, GPT-2.

Per raw text fragment (engine.md §3.4, llama.cpp `llm_tokenizer_bpe_session`): split with the pre-tokenizer's
regex list, map each piece's UTF-8 bytes through the GPT-2 byte→char table, then merge adjacent symbols by
merge rank (lowest first, leftmost on ties). Results are cached per piece: prompts repeat words a lot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import regex

from engine.tokenizer.merge import merge_pairs
from engine.tokenizer.special import TokenType

log = logging.getLogger(__name__)

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # fmt: skip
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
FALCON = r"[\p{P}\$\+<=>\^~\|`]+"
DEFAULT = r"[\p{P}\$\+<=>\^~\|]+"
SPECIAL_DEFAULTS = {"bos": 11, "eos": 11}  # llama.cpp's defaults for BPE vocabularies without the keys
CACHE_MAX_ENTRIES = 1 << 16


@dataclass(frozen=True)
class PreTokenizer:
    """A `tokenizer.ggml.pre` flavour: regexes applied in turn (each to the pieces of the previous one,
    keeping matches and gaps), whether a piece that is already a token skips merging, the add_bos default."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False
    add_bos: bool = False


_SMOLLM = PreTokenizer((r"\p{N}", GPT2))
_GPT2 = PreTokenizer((GPT2,))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer((QWEN2,))
_DEFAULT = PreTokenizer((DEFAULT, GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))
PRETOKENIZERS: dict[str, PreTokenizer] = {
    **dict.fromkeys(
        ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), _SMOLLM),
    **dict.fromkeys(
        ("gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es",
         "jina-v2-de", "jina-v2-code", "gigachat", "roberta-bpe", "exaone4"), _GPT2),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "lfm2"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), PreTokenizer((LLAMA3,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"), _QWEN2),
    "falcon": PreTokenizer((FALCON, GPT2, "[0-9][0-9][0-9]")),
    "default": _DEFAULT,
}  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte→char table: printable bytes map to themselves, the rest to U+0100 onwards."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    table.update((b, chr(256 + n)) for n, b in enumerate(extra))
    return dict(sorted(table.items()))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(text: str, patterns: list[regex.Pattern]) -> list[str]:
    """llama.cpp `unicode_regex_split`: each regex splits every piece into matches and the gaps between.
    ``patterns`` are compiled wrapped in one capturing group, so ``split`` keeps the matches."""
    pieces = [text]
    for pattern in patterns:
        pieces = [p for piece in pieces for p in pattern.split(piece) if p]
    return pieces


class BpeModel:
    """Byte-level BPE over a GGUF vocabulary and merge list."""

    def __init__(self, tokens: Sequence[str], vocab: dict[str, int], merges: list[str], pre: str) -> None:
        if pre not in PRETOKENIZERS:
            log.warning(
                "unknown pre-tokenizer %r, using 'default' (tokenization may differ from the model's)", pre
            )
        self.pre = PRETOKENIZERS.get(pre, _DEFAULT)
        self.add_bos_default = self.pre.add_bos
        self.strips_leading_space = False
        self._tokens = tokens
        self._vocab = vocab
        self._patterns = [regex.compile(f"({r})") for r in self.pre.regexes]  # no groups of their own
        # A merge line "a b" is the key itself: byte-level symbols never contain U+0020.
        self._ranks = {m: r for r, m in enumerate(merges)}
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_metadata(cls, md: dict, tokens: Sequence[str], vocab: dict[str, int]) -> BpeModel:
        merges = list(md.get("tokenizer.ggml.merges", []))
        return cls(tokens, vocab, merges, str(md.get("tokenizer.ggml.pre", "default")))

    def encode_fragment(self, text: str, after_special: bool) -> list[int]:
        """Token ids of one raw text fragment (no special-token handling here)."""
        out: list[int] = []
        cache = self._cache
        for piece in pre_tokenize(text, self._patterns):
            ids = cache.get(piece)
            if ids is None:
                if len(cache) >= CACHE_MAX_ENTRIES:
                    cache.clear()
                ids = cache[piece] = self._encode_piece(piece)
            out.extend(ids)
        return out

    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        # latin-1 turns each byte into the char with that ordinal, which str.translate maps through the table
        word = piece.encode("utf-8").decode("latin-1").translate(BYTE_TO_CHAR)
        vocab = self._vocab
        if self.pre.ignore_merges and word in vocab:
            return (vocab[word],)
        ranks = self._ranks
        symbols = merge_pairs(list(word), lambda a, b: ranks.get(f"{a} {b}"))
        ids: list[int] = []
        for sym in symbols:
            if sym in vocab:
                ids.append(vocab[sym])
            else:  # llama.cpp: fall back to single-byte tokens, silently dropping what has none
                ids.extend(vocab[c] for c in sym if ord(c) < 0x80 and c in vocab)
        return tuple(ids)

    def piece_bytes(self, token_id: int, token_type: int) -> bytes:
        """NORMAL token: each char mapped back through the byte table; other types render empty."""
        if token_type != TokenType.NORMAL:
            return b""
        text = self._tokens[token_id]
        # Chars outside the table (hand-edited vocabularies) pass through as UTF-8.
        return b"".join(bytes((CHAR_TO_BYTE[c],)) if c in CHAR_TO_BYTE else c.encode() for c in text)
