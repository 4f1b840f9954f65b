"""StreamDecoder: never emits half a UTF-8 character, and its concatenated output equals decode()."""

from __future__ import annotations

import pytest

from engine.tokenizer import StreamDecoder, split_utf8
from tests.engine.tokenizer.helpers import random_texts


def _stream(tokenizer, ids) -> list[str]:
    decoder = StreamDecoder(tokenizer)
    return [decoder.feed(i) for i in ids] + [decoder.flush()]


def _byte_ids(md: dict, data: bytes) -> list[int]:
    index = {t: i for i, t in enumerate(md["tokenizer.ggml.tokens"]) if t.startswith("<0x")}
    return [index[f"<0x{b:02X}>"] for b in data]


def test_spm_emoji_bytes_arrive_whole(gemma3_md, gemma3_tok):
    ids = _byte_ids(gemma3_md, "😀".encode())  # an emoji as four <0xHH> tokens, as SPM models emit it
    assert _stream(gemma3_tok, ids) == ["", "", "", "😀", ""]


def test_spm_text_around_byte_tokens(gemma3_md, gemma3_tok):
    ids = gemma3_tok.encode("Hi") + _byte_ids(gemma3_md, "é😀".encode()) + gemma3_tok.encode("!")
    chunks = _stream(gemma3_tok, ids)
    assert chunks == ["Hi", "", "é", "", "", "", "😀", "!", ""]
    assert "".join(chunks) == gemma3_tok.decode(ids)


def test_bpe_random_multibyte_text(smollm2_tok):
    for text in random_texts(seed=13, count=150):
        ids = smollm2_tok.encode(text)
        chunks = _stream(smollm2_tok, ids)
        assert "".join(chunks) == smollm2_tok.decode(ids) == text
        assert not any("\ufffd" in c for c in chunks), text  # no character was ever cut in two


def test_unfinished_character_at_end_is_dropped(gemma3_md, gemma3_tok):
    ids = gemma3_tok.encode("ok") + _byte_ids(gemma3_md, "😀".encode()[:2])
    assert _stream(gemma3_tok, ids) == ["ok", "", "", ""]
    assert gemma3_tok.decode(ids) == "ok"


def test_invalid_byte_becomes_replacement_character(gemma3_md, gemma3_tok):
    ids = _byte_ids(gemma3_md, b"\x80") + gemma3_tok.encode("A")
    assert "".join(_stream(gemma3_tok, ids)) == gemma3_tok.decode(ids) == "\ufffdA"


def test_control_tokens_are_silent(smollm2_tok):
    ids = smollm2_tok.encode("<|im_start|>assistant\nHi<|im_end|>", parse_special=True)
    assert "".join(_stream(smollm2_tok, ids)) == "assistant\nHi"


@pytest.mark.parametrize(
    "data, text, tail",
    [
        (b"abc", "abc", b""),
        ("é".encode(), "é", b""),
        ("é".encode()[:1], "", b"\xc3"),
        (b"a" + "😀".encode()[:3], "a", "😀".encode()[:3]),
        (b"a\xff", "a\ufffd", b""),  # never valid: not held back
        (b"\x80\x80", "\ufffd\ufffd", b""),
    ],
)
def test_split_utf8(data, text, tail):
    assert split_utf8(data) == (text, tail)
