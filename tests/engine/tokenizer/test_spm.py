"""SentencePiece-BPE on Gemma 3: llama.cpp's ids, a whole-fragment reference merge for random text (checks the
per-word cutting), user-defined tokens, byte fallback, add_space_prefix, BOS handling and speed."""

from __future__ import annotations

import pytest

from engine.tokenizer import Tokenizer
from engine.tokenizer.special import TokenType
from tests.conftest import ORACLES, oracle
from tests.engine.tokenizer.helpers import random_texts

CASES = oracle("gemma3-270m", "tokenize.json")


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['parse_special']}" for i, c in enumerate(CASES)])
def test_gemma3_matches_llama_cpp(gemma3_tok, case):
    assert gemma3_tok.encode(case["text"], case["add_special"], case["parse_special"]) == case["ids"]


def _reference_spm(vocab: dict[str, int], scores, text: str) -> list[int]:
    """llama.cpp's SPM merge over the whole fragment, naively: merge the best-scoring adjacent pair (leftmost
    on ties) until none is a token, then byte-fallback what is left."""
    symbols = list(text.replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            token_id = vocab.get(symbols[i] + symbols[i + 1])
            if token_id is not None and (best is None or scores[token_id] > best[0]):
                best = (scores[token_id], i)
        if best is None:
            break
        i = best[1]
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    ids = []
    for sym in symbols:
        ids.extend([vocab[sym]] if sym in vocab else [vocab[f"<0x{b:02X}>"] for b in sym.encode()])
    return ids


def test_word_cutting_matches_whole_fragment_merge(gemma3_md, gemma3_tok):
    tokens, types = gemma3_md["tokenizer.ggml.tokens"], gemma3_md["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens)}
    user_defined = [t for t, k in zip(tokens, types, strict=True) if k == TokenType.USER_DEFINED]
    texts = random_texts(seed=3, count=120, max_pieces=20)
    texts += ["a>▁</b x> y", "x> </y> ≤ ∞"]  # ">▁</" is the one Gemma token with "▁" after another char
    # User-defined tokens are cut out before SPM runs; the reference sees only text without them.
    texts = [t for t in texts if not any(u in t for u in user_defined)]
    assert len(texts) > 40 and "x> </y> ≤ ∞" in texts
    scores = gemma3_md["tokenizer.ggml.scores"]
    for text in texts:
        assert gemma3_tok.encode(text) == _reference_spm(vocab, scores, text), text


def test_user_defined_tokens_always_match(gemma3_tok):
    ids = gemma3_tok.encode("a  b\tc<h1>d")
    assert {138, 255968, gemma3_tok.encode("<h1>")[0]} <= set(ids)  # "  ", "\t", "<h1>" as single tokens
    assert gemma3_tok.encode("<h1>") == gemma3_tok.encode("<h1>", parse_special=True) and len(ids) == 7


def test_control_tokens_need_parse_special(gemma3_tok):
    assert gemma3_tok.encode("<start_of_turn>", parse_special=True) == [105]
    plain = gemma3_tok.encode("<start_of_turn>")
    assert 105 not in plain and gemma3_tok.decode(plain) == "<start_of_turn>"


def test_byte_fallback_round_trips(gemma3_tok):
    char = "\U0010fffd"  # private-use, not in the vocabulary
    ids = gemma3_tok.encode(char)
    assert [gemma3_tok.token_text(i) for i in ids] == ["<0xF4>", "<0x8F>", "<0xBF>", "<0xBD>"]
    assert gemma3_tok.decode(ids) == char


def test_round_trip_is_lossless(gemma3_tok):
    for text in random_texts(seed=11, count=200):
        assert gemma3_tok.decode(gemma3_tok.encode(text)) == text


def test_gemma3_special_ids(gemma3_tok):
    tok = gemma3_tok
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (2, 1, True, False)
    assert tok.eog_ids == {1, 106, 212}  # <eos>; <end_of_turn> and </s> by their texts (as llama.cpp)
    assert tok.newline_id == 107 and tok.vocab_size == 262144
    assert tok.token_bytes(248) == b"\n" and tok.token_text(248) == "<0x0A>"  # BYTE token
    assert tok.token_bytes(2) == b"" and tok.token_bytes(2, render_special=True) == b"<bos>"
    assert tok.token_bytes(255968) == b"\t"  # USER_DEFINED renders literally
    assert tok.token_bytes(1902) == b" world"  # "▁world"
    assert tok.encode("", add_special=True) == [2] and tok.encode("") == []


def test_add_space_prefix(gemma3_md, gemma3_tok):
    tok = Tokenizer.from_metadata({**gemma3_md, "tokenizer.ggml.add_space_prefix": True})
    assert tok.encode("Hello world") == gemma3_tok.encode(" Hello world")
    # The space goes before the first fragment and after every special token, not elsewhere.
    ids = tok.encode("hi<start_of_turn>user", parse_special=True)
    assert ids == gemma3_tok.encode(" hi") + [105] + gemma3_tok.encode(" user")
    assert tok.decode(tok.encode("Hello world", add_special=True)) == "Hello world"


def test_missing_keys_use_llama_cpp_defaults(gemma3_md):
    drop = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id"}  # fmt: skip
    tok = Tokenizer.from_metadata({k: v for k, v in gemma3_md.items() if k not in drop})
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (1, 2, True, False)
    assert tok.encode("Hi", add_special=True)[0] == 1
    assert tok.encode("Hi")[0] != Tokenizer.from_metadata(gemma3_md).encode("Hi")[0]  # "▁Hi", not "Hi"


def test_long_document_encodes_the_same_cold_and_warm(gemma3_md):
    """A 9000-character document through a fresh tokenizer, then again through its per-word cache (speed is measured
    in benchmarks, not here: ~0.16 s build, ~22 ms cold, ~2 ms warm on an idle core)."""
    text = (ORACLES.parent / "reference" / "design.md").read_text()[:9000]
    tok = Tokenizer.from_metadata(gemma3_md)
    ids = tok.encode(text, add_special=True, parse_special=True)
    assert len(ids) > 2000
    assert tok.encode(text, add_special=True, parse_special=True) == ids
    assert tok.decode(ids) == text
