"""Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), matching llama.cpp token for token.

`Tokenizer.from_metadata(md)` picks the model by `tokenizer.ggml.model`: "llama" (SentencePiece-BPE,
spm.py), "gpt2" (byte-level BPE, bpe.py), "bert" (WordPiece, wordpiece.py). Special tokens typed in the text
are cut out first (special.py); each remaining fragment goes to the model. Detokenizing works on bytes;
`StreamDecoder` turns a stream of token ids into text without ever splitting a UTF-8 character.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from engine.tokenizer import bpe, spm, wordpiece
from engine.tokenizer.special import (
    HIDDEN_TYPES,
    SpecialSplitter,
    TokenType,
    detect_by_text,
    eog_ids,
    read_special_ids,
    strip_attributes,
)

__all__ = ["StreamDecoder", "Tokenizer", "TokenType", "from_metadata"]

log = logging.getLogger(__name__)

# Lone surrogates (JSON allows "\ud800") cannot be encoded as UTF-8; they become U+FFFD, as in Go's decoder.
_SURROGATES = re.compile("[\ud800-\udfff]")

SPECIAL_DEFAULTS = {
    "llama": spm.SPECIAL_DEFAULTS,
    "gpt2": bpe.SPECIAL_DEFAULTS,
    "bert": wordpiece.SPECIAL_DEFAULTS,
}


class Tokenizer:
    """Encode text to token ids and back for one GGUF vocabulary."""

    def __init__(self, md: dict) -> None:
        kind = md.get("tokenizer.ggml.model")
        if kind not in SPECIAL_DEFAULTS:
            raise ValueError(f"unsupported tokenizer model {kind!r} (supported: llama, gpt2, bert)")
        self._tokens = _read_tokens(md)
        self.vocab_size = len(self._tokens)
        self._types = _read_types(md, self.vocab_size)
        # Duplicate texts: the last id wins, as in llama.cpp.
        self._vocab = {t: i for i, t in enumerate(self._tokens)}
        ids = read_special_ids(md, self.vocab_size, SPECIAL_DEFAULTS[kind])
        self._model = _build_model(kind, md, self._tokens, self._vocab, ids["unknown"])
        bos_eos = _bos_eos(kind, md, ids, self._model.add_bos_default)
        self.bos_id, self.eos_id, self.add_bos, self.add_eos = bos_eos
        detect_by_text(ids, self._vocab, self._types)
        self.eog_ids: frozenset[int] = eog_ids(ids, self._vocab, self._types, md)
        lstrip, rstrip = strip_attributes(md, self._vocab, self._types)
        self._splitter = SpecialSplitter(self._tokens, self._types, lstrip, rstrip)
        self._pieces: dict[int, bytes] = {}
        newline = self.encode("\n")
        self.newline_id: int | None = newline[0] if len(newline) == 1 else None

    @classmethod
    def from_metadata(cls, md: dict) -> Tokenizer:
        """Build from a GGUF metadata dict (engine.gguf.GGUFFile(path).metadata)."""
        return cls(md)

    def encode(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_special``: BOS/EOS as the metadata asks (bert: [CLS] … [SEP]);
        ``parse_special``: CONTROL/UNKNOWN token texts become their ids (USER_DEFINED ones always do)."""
        text = _SURROGATES.sub("\ufffd", text)
        ids: list[int] = []
        if add_special and self.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        after_special = True
        for fragment in self._splitter.split(text, parse_special):
            if isinstance(fragment, int):
                ids.append(fragment)
                after_special = True
            else:
                ids.extend(self._model.encode_fragment(fragment, after_special))
                after_special = False
        if add_special and self.add_bos and len(ids) >= 2 and ids[1] == self.bos_id:
            log.warning(
                "the text starts with a BOS token and another one was added: the prompt has 2 BOS tokens"
            )
        if add_special and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], render_special: bool = False) -> str:
        """Text of a whole token sequence. Invalid UTF-8 becomes U+FFFD; an unfinished trailing character
        is dropped (as StreamDecoder does)."""
        pieces = [self.token_bytes(i, render_special) for i in ids]
        first = 1 if pieces and ids[0] == self.bos_id else 0
        if self._model.strips_leading_space and first < len(pieces) and pieces[first].startswith(b" "):
            pieces[first] = pieces[first][1:]  # the space SentencePiece/WordPiece put before the first word
        return split_utf8(b"".join(pieces))[0]

    def token_bytes(self, token_id: int, render_special: bool = False) -> bytes:
        """The bytes one token contributes; CONTROL/UNKNOWN give b"" unless ``render_special``."""
        token_id = self._check(token_id)
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id)
        if not piece and render_special and int(self._types[token_id]) in HIDDEN_TYPES:
            return self._tokens[token_id].encode("utf-8")
        return piece

    def _piece(self, token_id: int) -> bytes:
        token_type = int(self._types[token_id])
        if token_type in HIDDEN_TYPES:
            return b""
        if token_type == TokenType.USER_DEFINED:
            return self._tokens[token_id].encode("utf-8")
        return self._model.piece_bytes(token_id, token_type)

    def token_text(self, token_id: int) -> str:
        """The raw vocabulary string (e.g. "Ġthe", "▁the", "<0x0A>")."""
        return self._tokens[self._check(token_id)]

    def is_valid(self, token_id: int) -> bool:
        return 0 <= int(token_id) < self.vocab_size

    def _check(self, token_id: int) -> int:
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return token_id


def from_metadata(md: dict) -> Tokenizer:
    """Tokenizer for a GGUF metadata dict; dispatches on `tokenizer.ggml.model`."""
    return Tokenizer.from_metadata(md)


class StreamDecoder:
    """Token ids in, text out, one token at a time: bytes of an unfinished UTF-8 character wait for the next
    token (an emoji in a SentencePiece vocabulary arrives as four `<0xHH>` tokens)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending = b""

    def feed(self, token_id: int) -> str:
        """Text completed by this token ('' while a character is still incomplete)."""
        text, self._pending = split_utf8(self._pending + self._tokenizer.token_bytes(token_id))
        return text

    def flush(self) -> str:
        """At the end: whatever can still be emitted; an unfinished trailing character is dropped."""
        text, _ = split_utf8(self._pending)
        self._pending = b""
        return text


def split_utf8(data: bytes) -> tuple[str, bytes]:
    """(text, tail): ``tail`` is an unfinished UTF-8 sequence at the very end (≤ 3 bytes) held back; the rest
    is decoded with invalid bytes replaced by U+FFFD, so split points never change the final text."""
    cut = len(data)
    for k in range(1, min(3, len(data)) + 1):
        b = data[-k]
        if 0x80 <= b <= 0xBF:
            continue  # continuation byte: keep looking for the lead byte
        need = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 1
        if need > k:
            cut = len(data) - k
        break
    return data[:cut].decode("utf-8", errors="replace"), data[cut:]


def _read_tokens(md: dict) -> Sequence[str]:
    """The vocabulary; the metadata's own list when it can be used as is (never modified here: a copy would cost
    8 bytes a token, 2 MB for Gemma 3)."""
    tokens = md["tokenizer.ggml.tokens"]
    if not isinstance(tokens, list | tuple):
        tokens = list(tokens)
    if "" in tokens:  # llama.cpp renames empty tokens so they can never match
        tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    return tokens


def _read_types(md: dict, n: int) -> np.ndarray:
    types = md.get("tokenizer.ggml.token_type")
    if types is None:
        return np.full(n, TokenType.NORMAL, dtype=np.int32)
    types = np.array(types, dtype=np.int32)  # a copy: EOG detection forces some entries to CONTROL
    if types.shape != (n,):
        raise ValueError(f"tokenizer.ggml.token_type has {types.size} entries for {n} tokens")
    return types


def _build_model(kind: str, md: dict, tokens: Sequence[str], vocab: dict[str, int], unk_id: int | None):
    if kind == "gpt2":
        return bpe.BpeModel.from_metadata(md, tokens, vocab)
    if kind == "llama":
        return spm.SpmModel.from_metadata(md, tokens, vocab, unk_id)
    return wordpiece.WordPieceModel.from_metadata(md, tokens, vocab, unk_id)


def _bos_eos(
    kind: str, md: dict, ids: dict, add_bos_default: bool
) -> tuple[int | None, int | None, bool, bool]:
    """(bos_id, eos_id, add_bos, add_eos). BERT always wraps in [CLS] … [SEP]; explicit keys win otherwise."""
    if kind == "bert":  # a GGUF may name [CLS]/[SEP] as cls/seperator or as bos/eos
        use_cls = "tokenizer.ggml.cls_token_id" in md or ids["bos"] is None
        use_sep = "tokenizer.ggml.seperator_token_id" in md or ids["eos"] is None
        return ids["cls"] if use_cls else ids["bos"], ids["seperator"] if use_sep else ids["eos"], True, True
    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
    return ids["bos"], ids["eos"], add_bos, add_eos
