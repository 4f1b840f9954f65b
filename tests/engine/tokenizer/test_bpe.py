"""Byte-level BPE: llama.cpp's ids for SmolLM2, HF `tokenizers` built from the same vocabulary as an oracle
for random text under each pre-tokenizer, round trips, special tokens and BOS handling."""

from __future__ import annotations

import logging

import pytest
import regex
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from engine.tokenizer import Tokenizer
from engine.tokenizer.bpe import GPT2, LLAMA3, QWEN2, pre_tokenize
from engine.tokenizer.special import TokenType
from tests.conftest import oracle
from tests.engine.tokenizer.helpers import random_texts, tiny_bpe_metadata

CASES = oracle("smollm2-135m", "tokenize.json")


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['parse_special']}" for i, c in enumerate(CASES)])
def test_smollm2_matches_llama_cpp(smollm2_tok, case):
    assert smollm2_tok.encode(case["text"], case["add_special"], case["parse_special"]) == case["ids"]


def _hf_pre_tokenizer(pre: str):
    """HF equivalents of our regex lists (engine.md §3.8); "isolated" = keep matches and gaps as pieces."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    split = [pre_tokenizers.Split(Regex(r), "isolated") for r in _REGEXES[pre]]
    return pre_tokenizers.Sequence([*split, byte_level])


_REGEXES = {
    "smollm": [r"\p{N}", GPT2],
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "qwen2": [QWEN2],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
}


def _hf_tokenizer(md: dict, pre: str) -> HFTokenizer:
    tokens = md["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in md["tokenizer.ggml.merges"]]
    hf = HFTokenizer(
        models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=pre == "llama-bpe")
    )
    hf.pre_tokenizer = _hf_pre_tokenizer(pre)
    hf.decoder = decoders.ByteLevel()
    types = md["tokenizer.ggml.token_type"]
    hf.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == TokenType.CONTROL
        ]
    )
    return hf


@pytest.mark.parametrize("pre", list(_REGEXES))
def test_random_text_matches_hf_tokenizers(smollm2_md, pre):
    ours = Tokenizer.from_metadata({**smollm2_md, "tokenizer.ggml.pre": pre})
    hf = _hf_tokenizer(smollm2_md, pre)
    for text in random_texts(seed=len(pre), count=150):
        assert ours.encode(text, parse_special=True) == hf.encode(text, add_special_tokens=False).ids, text


def test_pre_tokenizer_keeps_matches_and_gaps():
    patterns = [regex.compile(r"(\p{N})"), regex.compile(f"({GPT2})")]
    assert pre_tokenize("ab 12 cd  ", patterns) == ["ab", " ", "1", "2", " cd", "  "]


def test_round_trip_is_lossless(smollm2_tok):
    for text in random_texts(seed=7, count=200):
        assert smollm2_tok.decode(smollm2_tok.encode(text)) == text


def test_special_tokens_parsed_only_when_asked(smollm2_tok):
    text = "<|im_start|>user\nhi<|im_end|>"
    parsed = smollm2_tok.encode(text, parse_special=True)
    plain = smollm2_tok.encode(text)
    assert parsed[0] == 1 and parsed[-1] == 2
    assert 1 not in plain and 2 not in plain and len(plain) > len(parsed)
    assert smollm2_tok.decode(plain) == text  # typed as plain text, it reads back verbatim
    assert smollm2_tok.decode(parsed) == "user\nhi"  # control tokens are hidden ...
    assert smollm2_tok.decode(parsed, render_special=True) == text  # ... unless rendered


def test_smollm2_special_ids(smollm2_tok):
    assert (smollm2_tok.bos_id, smollm2_tok.eos_id, smollm2_tok.add_bos, smollm2_tok.add_eos) == (
        1,
        2,
        False,
        False,
    )
    assert smollm2_tok.eog_ids == {0, 2, 4}  # <|endoftext|>, <|im_end|>, <reponame> (FIM repo, as llama.cpp)
    assert smollm2_tok.newline_id == 198
    assert smollm2_tok.vocab_size == 49152
    assert smollm2_tok.token_text(314) == "Ġis" and smollm2_tok.token_bytes(314) == b" is"
    assert (
        smollm2_tok.token_bytes(2) == b"" and smollm2_tok.token_bytes(2, render_special=True) == b"<|im_end|>"
    )
    assert smollm2_tok.is_valid(49151) and not smollm2_tok.is_valid(49152) and not smollm2_tok.is_valid(-1)
    with pytest.raises(ValueError):
        smollm2_tok.token_bytes(49152)


def test_add_bos_key_is_honoured_and_double_bos_warns(smollm2_md, caplog):
    tok = Tokenizer.from_metadata({**smollm2_md, "tokenizer.ggml.add_bos_token": True})
    assert tok.encode("Hello world", add_special=True) == [1, 19556, 905]
    assert tok.encode("Hello world") == [19556, 905]
    with caplog.at_level(logging.WARNING, logger="engine.tokenizer"):
        assert tok.encode("<|im_start|>x", add_special=True, parse_special=True)[:2] == [1, 1]
    assert "2 BOS" in caplog.text


def test_bos_defaults_follow_llama_cpp():
    specials = {"<|begin_of_text|>": TokenType.CONTROL}
    plain = Tokenizer.from_metadata(tiny_bpe_metadata(specials, ["a b"]))
    assert plain.add_bos is False and plain.bos_id == 11  # gpt2 vocabularies default bos = eos = 11
    llama3 = Tokenizer.from_metadata(tiny_bpe_metadata(specials, ["a b"], pre="llama-bpe", bos_token_id=256))
    assert llama3.add_bos is True
    assert llama3.encode("ab", add_special=True) == [256, 257]


def test_ignore_merges_emits_whole_tokens():
    # "abc" is a token, but no merge builds it: only llama3-style vocabularies emit it directly.
    md = tiny_bpe_metadata({}, ["a b"], pre="gpt-2")
    md["tokenizer.ggml.tokens"] = [*md["tokenizer.ggml.tokens"], "abc"]
    md["tokenizer.ggml.token_type"] = [*md["tokenizer.ggml.token_type"], TokenType.NORMAL]
    a, c = ord("a"), ord("c")  # the first 256 tokens are the byte chars in byte order
    assert Tokenizer.from_metadata(md).encode("abc") == [256, c]
    assert Tokenizer.from_metadata({**md, "tokenizer.ggml.pre": "llama3"}).encode("abc") == [257]
    assert Tokenizer.from_metadata(md).encode("a") == [a]


def test_unknown_pre_tokenizer_falls_back_to_default(smollm2_md, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.tokenizer.bpe"):
        tok = Tokenizer.from_metadata({**smollm2_md, "tokenizer.ggml.pre": "no-such-pre"})
    assert "no-such-pre" in caplog.text
    default = Tokenizer.from_metadata({**smollm2_md, "tokenizer.ggml.pre": "default"})
    smollm = Tokenizer.from_metadata(smollm2_md)
    # "default" splits punctuation runs off first, so " (" becomes " " + "(" instead of one piece.
    assert tok.encode("f (x)") == default.encode("f (x)") != smollm.encode("f (x)")
