"""all-MiniLM-L6-v2 converted from its safetensors directory, against sentence-transformers' embeddings."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

import engine
from engine.convert import ConvertError, convert_safetensors
from engine.embed import embed
from engine.gguf import GGUFFile
from engine.models.bert import POOL_CLS, POOL_LAST
from tests.conftest import oracle

CASES = oracle("all-minilm-l6-v2", "embeddings.json")
REFERENCE = np.array([c["normalized"] for c in CASES])      # (n, 384)


@pytest.fixture(scope="module")
def gguf_path(all_minilm_dir, tmp_path_factory):
    return convert_safetensors(all_minilm_dir, tmp_path_factory.mktemp("minilm") / "all-minilm.gguf")


@pytest.fixture(scope="module")
def minilm(gguf_path):
    return engine.load_model(gguf_path)


@pytest.fixture(scope="module")
def batch_vectors(minilm):
    return embed(minilm, [c["ids"] for c in CASES])


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)


def test_converted_file_is_an_ollama_style_bert(gguf_path):
    with GGUFFile(gguf_path) as f:
        md = f.metadata
        assert f.architecture == "bert"
        assert md["bert.pooling_type"] == 1 and md["bert.normalize_embeddings"] is True
        assert md["bert.attention.causal"] is False
        assert md["bert.context_length"] == 512 and md["tokenizer.ggml.model"] == "bert"
        assert md["tokenizer.ggml.tokens"][7592] == "▁hello" and md["tokenizer.ggml.cls_token_id"] == 101
        assert f.tensors["token_embd.weight"].ggml_type == Q.F16
        assert f.tensors["token_types.weight"].ggml_type == Q.F32
        assert f.tensors["blk.5.layer_output_norm.bias"].shape == (384,)


def test_token_ids_match_sentence_transformers(minilm):
    for case in CASES:
        assert minilm.tokenizer.encode(case["text"], add_special=True) == case["ids"], case["text"]


def test_embeddings_match_sentence_transformers(batch_vectors):
    cos = cosines(batch_vectors, REFERENCE)
    assert cos.min() >= 0.999, [CASES[i]["text"] for i in np.nonzero(cos < 0.999)[0]]
    assert np.allclose(np.linalg.norm(batch_vectors, axis=1), 1.0, atol=1e-5)


def test_mean_pooled_hidden_states_before_normalization(minilm):
    """The unnormalized pooled vector too (mean over all tokens, [CLS] and [SEP] included)."""
    for case in (CASES[0], CASES[12], CASES[24]):     # plain, accented, code
        pooled = minilm.model.hidden([case["ids"]]).mean(axis=0)
        assert np.allclose(pooled, case["mean_pooled"], atol=2e-3), case["text"]


def test_one_batch_equals_one_by_one(minilm, batch_vectors):
    singles = np.stack([minilm.model.embed([c["ids"]])[0] for c in CASES])
    assert np.max(np.abs(singles - batch_vectors)) < 1e-5


def test_batch_order_does_not_matter(minilm, batch_vectors):
    order = np.random.default_rng(0).permutation(len(CASES))
    shuffled = minilm.model.embed([CASES[i]["ids"] for i in order])
    assert np.max(np.abs(shuffled - batch_vectors[order])) < 1e-5


def test_q8_0_conversion_stays_close(all_minilm_dir, tmp_path):
    path = convert_safetensors(all_minilm_dir, tmp_path / "q8.gguf", quantize="q8_0")
    with GGUFFile(path) as f:
        assert f.tensors["blk.0.ffn_up.weight"].ggml_type == Q.Q8_0
        assert f.tensors["position_embd.weight"].ggml_type == Q.F16       # llama.cpp never quantizes positions
    vectors = embed(engine.load_model(path), [c["ids"] for c in CASES])
    assert cosines(vectors, REFERENCE).min() >= 0.99


def test_inputs_beyond_the_context_are_refused(minilm):
    with pytest.raises(ValueError, match="513 tokens"):
        minilm.model.embed([[101] + [1000] * 511 + [102]])


def test_cls_and_last_pooling(minilm):
    model = copy.copy(minilm.model)                  # same weights, its own config
    seqs = [CASES[0]["ids"], CASES[5]["ids"]]
    for pooling, row in ((POOL_CLS, 0), (POOL_LAST, -1)):
        model.cfg = dataclasses.replace(minilm.model.cfg, pooling_type=pooling)
        got = model.embed(seqs)
        for vector, seq in zip(got, seqs, strict=True):
            h = model.hidden([seq])[row]
            assert np.allclose(vector, h / np.linalg.norm(h), atol=1e-5)


def copy_dir(src, dst):
    """The checkpoint directory with the weights symlinked (90 MB) and the small files copied."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_vocabulary_from_tokenizer_json_when_vocab_txt_is_absent(all_minilm_dir, tmp_path, gguf_path):
    src = copy_dir(all_minilm_dir, tmp_path / "src")
    (src / "vocab.txt").unlink()
    with GGUFFile(convert_safetensors(src, tmp_path / "m.gguf")) as f, GGUFFile(gguf_path) as g:
        assert f.metadata["tokenizer.ggml.tokens"] == g.metadata["tokenizer.ggml.tokens"]
        assert list(f.metadata["tokenizer.ggml.token_type"]) == list(g.metadata["tokenizer.ggml.token_type"])


def test_cased_vocabulary_is_refused(all_minilm_dir, tmp_path):
    src = copy_dir(all_minilm_dir, tmp_path / "src")
    (src / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(ConvertError, match="cased"):
        convert_safetensors(src, tmp_path / "m.gguf")
