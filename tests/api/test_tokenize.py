"""POST /api/tokenize and /api/detokenize."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_tokenize_matches_known_ids(post):
    assert post("/api/tokenize", {"model": "smollm2:135m", "content": "Hello world"}).json() == {"tokens": [19556, 905]}


def test_special_token_text_becomes_one_id(post):
    tokens = post("/api/tokenize", {"model": "smollm2:135m",
                                    "content": "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"}).json()["tokens"]
    assert tokens == [1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198]


def test_detokenize_round_trip(post):
    text = "Café ☕ costs 3€ — naïve résumé"
    tokens = post("/api/tokenize", {"model": "smollm2:135m", "content": text}).json()["tokens"]
    assert post("/api/detokenize", {"model": "smollm2:135m", "tokens": tokens}).json()["content"] == text


@pytest.mark.parametrize("tokens", [[49152], [-1], [1, 2, 10 ** 12]])
def test_out_of_vocabulary_is_400(post, tokens):
    r = post("/api/detokenize", {"model": "smollm2:135m", "tokens": tokens})
    assert r.status_code == 400 and "vocabulary" in r.json()["error"]


def test_non_integer_tokens_are_400(post):
    r = post("/api/detokenize", {"model": "smollm2:135m", "tokens": ["a"]})
    assert r.status_code == 400
