"""WordPiece on all-MiniLM-L6-v2 (vocab.txt → GGUF phantom-space form): the ids sentence-transformers used,
HF `tokenizers` with the model's tokenizer.json on random text, special tokens and the vocab conversion."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer as HFTokenizer

from engine.tokenizer import Tokenizer
from engine.tokenizer.special import TokenType
from engine.tokenizer.wordpiece import (
    normalize,
    pre_tokenize,
    vocab_txt_to_gguf_tokens,
    vocab_txt_token_types,
)
from tests.conftest import oracle
from tests.engine.tokenizer.helpers import PIECES, random_texts

CASES = oracle("all-minilm-l6-v2", "embeddings.json")


def test_vocab_txt_conversion():
    lines = ["[PAD]", "[unused0]", "[UNK]", "the", "##s", "##", "#", "[", "]\n"]
    assert vocab_txt_to_gguf_tokens(lines) == [
        "[PAD]",
        "[unused0]",
        "[UNK]",
        "▁the",
        "s",
        "",
        "▁#",
        "▁[",
        "▁]",
    ]
    control, normal = TokenType.CONTROL, TokenType.NORMAL
    assert vocab_txt_token_types(lines) == [
        control,
        normal,
        control,
        normal,
        normal,
        normal,
        normal,
        normal,
        normal,
    ]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_minilm_matches_sentence_transformers(minilm_tok, case):
    assert minilm_tok.encode(case["text"], add_special=True) == case["ids"]


def test_random_text_matches_hf_tokenizer_json(minilm_tok, all_minilm_dir):
    hf = HFTokenizer.from_file(str(all_minilm_dir / "tokenizer.json"))
    hf.no_padding()
    hf.no_truncation()
    pieces = [
        *PIECES,
        "Ǆ",
        "İ",
        "ﬁ",
        "\U0002b820",
        "\U0002b920",
        "\uf900",
        "Ⅻ",
        "①",
        "\u0301",
        "\x1c",
        "\ufffd",
    ]
    for text in random_texts(seed=5, count=300, pieces=pieces):
        assert minilm_tok.encode(text, add_special=True) == hf.encode(text).ids, repr(text)


def test_normalizer_and_pre_tokenizer():
    assert normalize("Héllo\tWÖRLD\x00\u200b中文") == "hello world 中  文 "
    assert pre_tokenize("a$b, c+d") == ["a", "$", "b", ",", "c", "+", "d"]


def test_minilm_special_ids(minilm_tok):
    tok = minilm_tok
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (101, 102, True, True)
    assert tok.newline_id is None  # whitespace never becomes a token
    assert tok.encode("") == [] and tok.encode("", add_special=True) == [101, 102]


def test_long_word_is_unknown(minilm_tok):
    assert minilm_tok.encode("a" * 101, add_special=True) == [101, 100, 102]
    assert len(minilm_tok.encode("a" * 100)) > 1


def test_special_tokens(minilm_tok):
    assert minilm_tok.encode("a [SEP] b", parse_special=True) == [1037, 102, 1038]
    assert minilm_tok.encode("a [SEP] b") == [1037, 1031, 19802, 1033, 1038]


def test_decode(minilm_tok):
    ids = minilm_tok.encode("Unbelievable results, truly", add_special=True)
    assert minilm_tok.decode(ids) == "unbelievable results , truly"
    assert minilm_tok.decode(ids, render_special=True) == "[CLS]unbelievable results , truly[SEP]"


def test_cls_sep_may_be_named_bos_eos(minilm_md, minilm_tok):
    drop = ("tokenizer.ggml.cls_token_id", "tokenizer.ggml.seperator_token_id")
    md = {k: v for k, v in minilm_md.items() if k not in drop}
    renamed = Tokenizer.from_metadata(
        {**md, "tokenizer.ggml.bos_token_id": 103, "tokenizer.ggml.eos_token_id": 0}
    )
    assert renamed.encode("hi", add_special=True) == [103, 7632, 0]
    assert Tokenizer.from_metadata(md).encode("hi", add_special=True) == minilm_tok.encode(
        "hi", add_special=True
    )
