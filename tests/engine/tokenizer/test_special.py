"""Special-token partitioning, EOG detection and metadata edge cases, on tiny synthetic BPE vocabularies."""

from __future__ import annotations

import pytest

from engine.tokenizer import Tokenizer
from engine.tokenizer.special import TokenType
from tests.engine.tokenizer.helpers import tiny_bpe_metadata

CONTROL, USER, NORMAL = TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.NORMAL


def test_longest_candidate_is_split_out_first():
    # Left to right "ab" would match first; llama.cpp processes longer candidates first, so "bcd" wins.
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({"ab": CONTROL, "bcd": CONTROL}))
    assert tok.encode("abcd", parse_special=True) == [ord("a"), 257]
    assert tok.encode("abab", parse_special=True) == [256, 256]
    assert tok.encode("abcd") == [ord(c) for c in "abcd"]


def test_user_defined_always_control_only_with_parse_special():
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({"<u>": USER, "<c>": CONTROL}))
    assert tok.encode("x<u>y<c>") == [ord("x"), 256, ord("y"), *(ord(c) for c in "<c>")]
    assert tok.encode("x<u>y<c>", parse_special=True) == [ord("x"), 256, ord("y"), 257]
    assert tok.decode([256, 257]) == "<u>" and tok.decode([256, 257], render_special=True) == "<u><c>"


def test_eog_texts_are_forced_to_control():
    md = tiny_bpe_metadata({"<|im_end|>": NORMAL, "<|eot_id|>": NORMAL, "<x>": CONTROL}, eos_token_id=258)
    tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.eos_token_ids": [ord("z")]})
    assert tok.eog_ids == {256, 257, 258, ord("z")}
    assert tok.encode("<|im_end|>", parse_special=True) == [256]
    assert len(tok.encode("<|im_end|>")) > 1  # now CONTROL: typed text stays text without parse_special
    assert tok.decode([256]) == ""


def test_phi3_special_tokens_strip_following_whitespace():
    specials = {"<|user|>": CONTROL, "<s>": CONTROL, "</s>": CONTROL}
    md = {**tiny_bpe_metadata(specials), "general.name": "Phi-3 mini"}
    tok = Tokenizer.from_metadata(md)
    assert tok.encode("<|user|> \n hi</s> x", parse_special=True) == [256, ord("h"), ord("i"), 258, ord("x")]
    assert tok.encode("<s> x", parse_special=True) == [257, ord(" "), ord("x")]  # llama.cpp exempts <s>


def test_empty_token_texts_never_match():
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({"": USER}))
    assert tok.token_text(256) == "[EMPTY_256]"
    assert tok.encode("ab") == [ord("a"), ord("b")]


def test_out_of_range_special_ids_are_ignored():
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({}, bos_token_id=10**6, eos_token_id=5))
    assert tok.bos_id == 11 and tok.eos_id == 5


def test_unsupported_tokenizer_model():
    with pytest.raises(ValueError, match="t5"):
        Tokenizer.from_metadata({**tiny_bpe_metadata({}), "tokenizer.ggml.model": "t5"})


def test_token_type_length_must_match():
    md = tiny_bpe_metadata({})
    with pytest.raises(ValueError, match="token_type"):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.token_type": [1, 1]})


def test_lone_surrogates_become_replacement_characters():
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({}))
    assert tok.encode("a\ud800b") == tok.encode("a\ufffdb")
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
