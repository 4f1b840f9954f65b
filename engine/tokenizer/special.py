"""Token types, special-token ids, end-of-generation detection and special-token partitioning.

Follows llama.cpp `llama_vocab::impl::load` and `tokenizer_st_partition` (engine.md §3.1, §3.2, §3.6).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import regex

log = logging.getLogger(__name__)


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Hidden when detokenizing (unless rendering specials) and matched in prompts only with parse_special.
HIDDEN_TYPES = frozenset({TokenType.CONTROL, TokenType.UNKNOWN})
# Matched on the raw text before the model tokenizer runs (USER_DEFINED always, others with parse_special).
PARTITION_TYPES = (TokenType.CONTROL, TokenType.UNKNOWN, TokenType.USER_DEFINED)

# Tokens llama.cpp finds by text when the metadata lacks the id; each found one is forced to CONTROL. (When a vocab
# holds several candidates for one role llama.cpp takes whichever its hash map yields first; we take list order.)
AUTO_DETECT: dict[str, tuple[str, ...]] = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
            "<EOT>", "_<EOT>", "[EOT]", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}  # fmt: skip
# Any token with one of these texts ends generation (and is forced to CONTROL), but see _eog_workarounds.
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
})  # fmt: skip
# gpt-oss's structural tokens are always rendered and matched: llama.cpp makes them USER_DEFINED.
ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")
EOG_NAMES = ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep")
# GGUF key suffixes `tokenizer.ggml.<name>_token_id` (note the historical spelling "seperator").
ID_NAMES = ("bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask", "cls",
            "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep")  # fmt: skip
_ASCII_SPACE = " \t\n\v\f\r"  # C isspace(): what llama.cpp's LSTRIP/RSTRIP trims


def read_special_ids(md: dict, n_vocab: int, defaults: dict[str, int]) -> dict[str, int | None]:
    """Special ids from `tokenizer.ggml.*_token_id`; out-of-range ids keep the default (llama.cpp warns)."""
    ids: dict[str, int | None] = {name: defaults.get(name) for name in ID_NAMES}
    for name in ID_NAMES:
        value = md.get(f"tokenizer.ggml.{name}_token_id")
        if value is None:
            continue
        if 0 <= int(value) < n_vocab:
            ids[name] = int(value)
        else:
            log.warning("bad special token id %s = %s, using default %s", name, value, ids[name])
    for name, token_id in ids.items():
        if token_id is not None and not 0 <= token_id < n_vocab:
            ids[name] = None  # a default beyond a small vocabulary: there is no such token
    return ids


def detect_by_text(ids: dict[str, int | None], vocab: dict[str, int], types: np.ndarray) -> None:
    """Fill missing eot/eom/fim ids from well-known token texts and force those tokens to CONTROL."""
    for name, texts in AUTO_DETECT.items():
        if ids.get(name) is not None:
            continue
        found = next((vocab[t] for t in texts if t in vocab), None)
        if found is not None:
            ids[name] = found
            types[found] = TokenType.CONTROL


def eog_ids(ids: dict[str, int | None], vocab: dict[str, int], types: np.ndarray, md: dict) -> frozenset[int]:
    """End-of-generation set: eos/eot/eom/fim ids, every token with an EOG text (forced to CONTROL), and
    Ollama's extra `tokenizer.ggml.eos_token_ids`."""
    eog = {ids[name] for name in EOG_NAMES if ids.get(name) is not None}
    for text in EOG_TEXTS:
        if text in vocab:
            eog.add(vocab[text])
            types[vocab[text]] = TokenType.CONTROL
    for text in ALWAYS_RENDERED:
        if text in vocab:
            types[vocab[text]] = TokenType.USER_DEFINED
    _eog_workarounds(eog, vocab, types)
    extra = md.get("tokenizer.ggml.eos_token_ids")
    if extra is not None:
        eog.update(int(i) for i in np.asarray(extra).ravel() if 0 <= int(i) < len(types))
    return frozenset(eog)


def _eog_workarounds(eog: set[int], vocab: dict[str, int], types: np.ndarray) -> None:
    """llama.cpp's exceptions to its EOG texts: harmony (gpt-oss) and solar-open vocabs end a message, not the
    generation, with ``<|end|>``; gemma4's ``</s>`` is ordinary text."""
    present = {text for text in ("<|end|>", "<|return|>", "<|call|>", "<|calls|>", "<|flush|>", "<|tool_response>",
                                 "</s>") if text in vocab and vocab[text] in eog}
    calls = bool(present & {"<|call|>", "<|calls|>"})
    if "<|end|>" in present and calls and present & {"<|return|>", "<|flush|>"}:
        eog.discard(vocab["<|end|>"])
        types[vocab["<|end|>"]] = TokenType.USER_DEFINED
    if {"<|tool_response>", "</s>"} <= present:
        eog.discard(vocab["</s>"])
        types[vocab["</s>"]] = TokenType.NORMAL


def strip_attributes(md: dict, vocab: dict[str, int], types: np.ndarray) -> tuple[frozenset, frozenset]:
    """(lstrip ids, rstrip ids). Not stored in GGUF: llama.cpp sets them by model or pre-tokenizer name."""
    pre = str(md.get("tokenizer.ggml.pre", ""))
    name = str(md.get("general.name", "")).lower()
    if any(p in pre for p in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) and "<mask>" in vocab:
        return frozenset({vocab["<mask>"]}), frozenset()
    if "phi-3" in name or "phi3" in name:
        special = np.flatnonzero(np.isin(types, PARTITION_TYPES)).tolist()
        rstrip = set(special) | {vocab[t] for t in ("</s>",) if t in vocab}
        rstrip -= {vocab[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in vocab}
        return frozenset(), frozenset(rstrip)
    return frozenset(), frozenset()


class SpecialSplitter:
    """Cuts special-token texts out of raw text before the model tokenizer sees it (llama.cpp
    `tokenizer_st_partition`): candidates longest first (UTF-8 bytes), each split out of every remaining
    text fragment left to right. USER_DEFINED tokens always match; CONTROL/UNKNOWN only with parse_special."""

    def __init__(self, tokens: Sequence[str], types: np.ndarray, lstrip: frozenset = frozenset(),
                 rstrip: frozenset = frozenset()) -> None:  # fmt: skip
        ids = np.flatnonzero(np.isin(types, PARTITION_TYPES)).tolist()
        ids.sort(key=lambda i: (-len(tokens[i].encode()), i))
        self._candidates = [(tokens[i], i, types[i] == TokenType.USER_DEFINED) for i in ids]
        self._lstrip, self._rstrip = lstrip, rstrip
        # Index by the first two characters so a prompt only pays for candidates that can occur in it
        # (Gemma 3 has 6400 of them, mostly "<unusedN>"); _starts finds those prefixes in a text.
        self._by_prefix: dict[str, list[int]] = {}
        for order, (text, _, _) in enumerate(self._candidates):
            self._by_prefix.setdefault(text[:2], []).append(order)
        first_chars = "".join(sorted({text[0] for text, _, _ in self._candidates if text}))
        self._starts = (
            regex.compile(f"(?=([{regex.escape(first_chars)}].?))", regex.S) if first_chars else None
        )

    def split(self, text: str, parse_special: bool) -> list[str | int]:
        """Fragments in order: str = raw text for the model tokenizer, int = a special token id."""
        fragments: list[str | int] = [text] if text else []
        for cand, token_id in self._present(text, parse_special):
            out: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, str) and cand in frag:
                    out.extend(self._split_one(frag, cand, token_id))
                else:
                    out.append(frag)
            fragments = out
        return fragments

    def _present(self, text: str, parse_special: bool) -> list[tuple[str, int]]:
        if self._starts is None:
            return []
        keys = set(self._starts.findall(text))
        keys.update([k[0] for k in keys])  # one-character candidates
        orders = sorted(o for key in keys & self._by_prefix.keys() for o in self._by_prefix[key])
        found = []
        for o in orders:
            cand, token_id, always = self._candidates[o]
            if (always or parse_special) and cand in text:
                found.append((cand, token_id))
        return found

    def _split_one(self, frag: str, cand: str, token_id: int) -> list[str | int]:
        out: list[str | int] = []
        start = 0
        while (pos := frag.find(cand, start)) >= 0:
            left = frag[start:pos]
            if token_id in self._lstrip:
                left = left.rstrip(_ASCII_SPACE)
            if left:
                out.append(left)
            out.append(token_id)
            start = pos + len(cand)
            if token_id in self._rstrip:
                while start < len(frag) and frag[start] in _ASCII_SPACE:
                    start += 1
        if start < len(frag):
            out.append(frag[start:])
        return out
