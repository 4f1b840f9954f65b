"""Special-token partitioning, EOG detection and metadata edge cases, on tiny synthetic BPE vocabularies."""

from __future__ import annotations

import pytest

from engine.tokenizer import Tokenizer
from engine.tokenizer.special import TokenType
from tests.engine.tokenizer.helpers import tiny_bpe_metadata

CONTROL, USER, NORMAL = TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.NORMAL
Z = ord("z")   # an eos id that is none of the tokens under test


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


# What llama.cpp (the build that produced the oracles) reports for a vocab holding one of these texts as a
# USER_DEFINED token: (ends generation, control). Measured with llama_vocab_is_eog / llama_vocab_is_control.
LLAMA_CPP_EOG = {
    "<|flush|>": (True, True), "<|calls|>": (True, True), "[EOT]": (True, True), "[EOS]": (True, True),
    "<eos>": (True, True), "<turn|>": (True, True), "<reponame>": (True, True), "<fim_pad>": (True, True),
    "<fim_suffix>": (False, True), "</s>": (True, True), "<|channel|>": (False, False), "[PAD]": (True, True),
}


@pytest.mark.parametrize("text", sorted(LLAMA_CPP_EOG))
def test_eog_and_control_texts_as_llama_cpp(text):
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({text: USER}, eos_token_id=Z))
    ends, control = LLAMA_CPP_EOG[text]
    assert tok.eog_ids - {Z} == ({256} if ends else set())
    assert (tok.encode(text) == [256]) == (not control)      # control tokens are matched only with parse_special
    assert tok.encode(text, parse_special=True) == [256]


def test_gemma4_vocab_keeps_end_of_sequence_text_as_text():
    """With <|tool_response> present, llama.cpp takes </s> back out of the EOG set and makes it NORMAL."""
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({"</s>": USER, "<|tool_response>": USER}, eos_token_id=Z))
    assert tok.eog_ids == {257, Z}
    assert tok.encode("</s>", parse_special=True) != [256]


@pytest.mark.parametrize("solar", [False, True])
def test_harmony_and_solar_vocabs_do_not_stop_at_end_of_message(solar):
    """<|end|> closes a message in gpt-oss (with <|return|> and <|call|>) and solar-open (<|flush|>, <|calls|>):
    llama.cpp drops it from the EOG set and renders it."""
    texts = ("<|end|>", "<|flush|>", "<|calls|>") if solar else ("<|end|>", "<|return|>", "<|call|>")
    tok = Tokenizer.from_metadata(tiny_bpe_metadata({t: USER for t in texts}, eos_token_id=Z))
    assert tok.eog_ids == {257, 258, Z}
    assert tok.encode("<|end|>") == [256] and tok.decode([256]) == "<|end|>"
    alone = Tokenizer.from_metadata(tiny_bpe_metadata({"<|end|>": USER}, eos_token_id=Z))
    assert alone.eog_ids == {256, Z} and alone.decode([256]) == ""


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
