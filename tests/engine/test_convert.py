"""engine.convert on tiny random checkpoints: a converted llama must compute what the original HF weights compute
(rotate_half RoPE, un-permuted Q/K), the vocabulary must tokenize like Hugging Face's, and bad input must fail
with ConvertError and leave nothing behind."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from safetensors.numpy import save_file
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

import engine
from engine.convert import LLAMA3_REGEX, QWEN2_REGEX, ConvertError, convert_safetensors, permute_qk
from engine.gguf import GGUFFile
from tests.engine.llama_reference import TinyConfig, forward, random_llama

CFG = TinyConfig()
TOKENS = [5, 17, 260, 3, 99, 301, 42, 7, 0, 250]   # includes a [PAD] row (301 > tokenizer size 300)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


PRE_TOKENIZERS = {  # tokenizer.ggml.pre -> the HF pre-tokenizer that implies it
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False)]),
    "llama-bpe": lambda: _split_then_bytes(LLAMA3_REGEX),
    "qwen2": lambda: _split_then_bytes(QWEN2_REGEX),
}


def _split_then_bytes(regex: str):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def hf_tokenizer(pre: str = "gpt-2") -> HFTokenizer:
    """A real byte-level BPE tokenizer (300 tokens) trained by Hugging Face `tokenizers`."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = PRE_TOKENIZERS[pre]()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog. hello there! 12345 I'll"] * 20,
                            trainer)
    return tok


def write_checkpoint(d: Path, weights: dict[str, np.ndarray], arch: str = "LlamaForCausalLM", pre: str = "gpt-2",
                     **config) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(d / "model.safetensors"))
    cfg = {"architectures": [arch], "hidden_size": CFG.dim, "num_attention_heads": CFG.n_head,
           "num_key_value_heads": CFG.n_kv_head, "num_hidden_layers": CFG.n_layer, "intermediate_size": CFG.ffn_dim,
           "vocab_size": CFG.vocab, "max_position_embeddings": 128, "rms_norm_eps": CFG.eps,
           "rope_theta": CFG.rope_base, "tie_word_embeddings": "lm_head.weight" not in weights, **config}
    (d / "config.json").write_text(json.dumps(cfg))
    hf_tokenizer(pre).save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": False,
         "chat_template": TEMPLATE}))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 2]}))
    return d


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return random_llama(CFG, seed=1)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, weights) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny-llama"), weights)


@pytest.fixture(scope="module")
def converted(llama_dir, tmp_path_factory):
    """quantize option -> (GGUF path, LoadedModel)."""
    out = {}
    for q in (None, "f32", "q8_0"):
        path = convert_safetensors(llama_dir, tmp_path_factory.mktemp("out") / f"tiny-{q}.gguf", quantize=q)
        out[q] = (path, engine.load_model(path))
    return out


def engine_logits(loaded) -> np.ndarray:
    model = loaded.model
    return model.forward(np.array(TOKENS), 0, model.new_cache(64), all_logits=True)   # (T, vocab)


def rounded(weights: dict[str, np.ndarray], qtype: Q) -> dict[str, np.ndarray]:
    """What a GGUF of ``qtype`` holds: 2-D weights through that format and back, 1-D unchanged."""
    return {k: gguf_dequantize(gguf_quantize(v, qtype), qtype) if v.ndim == 2 else v for k, v in weights.items()}


def test_f32_conversion_computes_the_hf_model(converted, weights):
    ref = forward(weights, CFG, TOKENS, rope="neox")
    ours = engine_logits(converted["f32"][1])
    # the remaining difference is the engine's f16 KV cache (llama.cpp's default)
    assert np.max(np.abs(ours - ref)) < 3e-3 * np.max(np.abs(ref))
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))


def test_without_the_qk_permutation_the_logits_would_differ(converted, weights):
    """The check above is sensitive to RoPE layout: the HF weights under adjacent-pair RoPE are far off."""
    wrong = forward(weights, CFG, TOKENS, rope="normal")
    ours = engine_logits(converted["f32"][1])
    assert np.max(np.abs(ours - wrong)) > 0.1 * np.max(np.abs(wrong))


def test_default_is_f16_weights_f32_norms_and_matches_f16_rounded_weights(converted, weights):
    path, loaded = converted[None]
    with GGUFFile(path) as f:
        assert f.tensors["blk.0.attn_q.weight"].ggml_type == Q.F16
        assert f.tensors["blk.0.attn_norm.weight"].ggml_type == Q.F32
        assert f.metadata["general.file_type"] == 1
    ref = forward(rounded(weights, Q.F16), CFG, TOKENS, rope="neox")
    assert np.max(np.abs(engine_logits(loaded) - ref)) < 3e-3 * np.max(np.abs(ref))


def test_q8_0_conversion_is_close(converted, weights):
    path, loaded = converted["q8_0"]
    with GGUFFile(path) as f:
        assert {f.tensors[n].ggml_type for n in ("blk.1.ffn_down.weight", "output.weight")} == {Q.Q8_0}
        assert f.metadata["general.file_type"] == 7
    ref = forward(rounded(weights, Q.Q8_0), CFG, TOKENS, rope="neox")
    ours = engine_logits(loaded)
    assert np.max(np.abs(ours - ref)) < 3e-2 * np.max(np.abs(ref))   # 8-bit activations, as llama.cpp
    assert np.mean(ours.argmax(-1) == ref.argmax(-1)) >= 0.9


def test_metadata_maps_config(converted):
    md = converted["f32"][1].metadata
    assert md["general.architecture"] == "llama"
    assert (md["llama.embedding_length"], md["llama.block_count"], md["llama.feed_forward_length"]) == (64, 2, 128)
    assert (md["llama.attention.head_count"], md["llama.attention.head_count_kv"]) == (4, 2)
    assert md["llama.rope.dimension_count"] == 16 and md["llama.context_length"] == 128
    assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(CFG.eps)


def test_vocabulary_tokenizes_like_hugging_face(converted):
    tok = converted["f32"][1].tokenizer
    hf = hf_tokenizer()
    for text in ["hello world", "The quick brown fox!", "  spaces\tand\nnewlines 123", "héllo 👍 wörld"]:
        assert tok.encode(text) == hf.encode(text).ids, text
    assert tok.vocab_size == CFG.vocab and tok.token_text(310) == "[PAD310]"


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2"])
def test_pre_tokenizer_is_recognized_and_splits_like_hugging_face(tmp_path, weights, pre):
    src = write_checkpoint(tmp_path / "src", weights, pre=pre)
    loaded = engine.load_model(convert_safetensors(src, tmp_path / "m.gguf", quantize="f32"))
    assert loaded.metadata["tokenizer.ggml.pre"] == pre
    hf = hf_tokenizer(pre)
    for text in ["12345 and 1234567", "I'll HELLO'S   world\n\n x", "the 3.14159 fox"]:
        assert loaded.tokenizer.encode(text) == hf.encode(text).ids, text


def test_special_tokens_and_template(converted):
    lm = converted["f32"][1]
    assert lm.tokenizer.bos_id == 1 and lm.tokenizer.eos_id == 2 and not lm.tokenizer.add_bos
    assert lm.tokenizer.encode("<|im_start|>hi", parse_special=True)[0] == 1
    assert lm.metadata["tokenizer.chat_template"] == TEMPLATE
    assert {0, 2} <= lm.tokenizer.eog_ids
    assert lm.metadata["tokenizer.ggml.pre"] == "gpt-2"


def test_permute_qk_interleaves_the_halves_of_each_head():
    d, heads = 8, 2
    w = np.arange(heads * d)[:, None].astype(np.float32)                      # row i holds i
    out = permute_qk(w, heads)[:, 0]
    assert out.tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def test_tied_embeddings_have_no_output_tensor(tmp_path):
    weights = random_llama(CFG, seed=2, tied=True)
    path = convert_safetensors(write_checkpoint(tmp_path / "src", weights), tmp_path / "t.gguf", quantize="f32")
    with GGUFFile(path) as f:
        assert "output.weight" not in f.tensors
    ref = forward(weights, CFG, TOKENS, rope="neox")
    assert np.max(np.abs(engine_logits(engine.load_model(path)) - ref)) < 3e-3 * np.max(np.abs(ref))


def test_bf16_source_stays_bf16(tmp_path, weights):
    d = write_checkpoint(tmp_path / "src", weights)
    write_bf16_safetensors(d / "model.safetensors", weights)
    path = convert_safetensors(d, tmp_path / "b.gguf")
    with GGUFFile(path) as f:
        assert f.tensors["blk.0.ffn_up.weight"].ggml_type == Q.BF16
        assert f.tensors["blk.0.attn_norm.weight"].ggml_type == Q.F32
    as_bf16 = {k: gguf_dequantize(gguf_quantize(v, Q.BF16), Q.BF16).reshape(v.shape) for k, v in weights.items()}
    ref = forward(as_bf16, CFG, TOKENS, rope="neox")        # every source value, norms too, was bfloat16
    assert np.max(np.abs(engine_logits(engine.load_model(path)) - ref)) < 3e-3 * np.max(np.abs(ref))


def write_bf16_safetensors(path: Path, weights: dict[str, np.ndarray]) -> None:
    """safetensors.numpy cannot write bfloat16: lay the file out by hand (header JSON + raw halves)."""
    header, blobs, offset = {}, [], 0
    for name, w in weights.items():
        raw = gguf_quantize(w, Q.BF16).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(w.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_qwen2_keeps_qk_rows_and_biases(tmp_path, weights):
    weights = dict(weights)
    for i in range(CFG.n_layer):
        for x, rows in (("q", 64), ("k", 32), ("v", 32)):
            weights[f"model.layers.{i}.self_attn.{x}_proj.bias"] = np.full(rows, 0.5 + i, np.float32)
    d = write_checkpoint(tmp_path / "src", weights, arch="Qwen2ForCausalLM", rope_theta=1e6)
    with GGUFFile(convert_safetensors(d, tmp_path / "q.gguf", quantize="f32")) as f:
        assert f.architecture == "qwen2" and f.metadata["qwen2.rope.freq_base"] == 1e6
        assert np.array_equal(f.array("blk.1.attn_q.weight"), weights["model.layers.1.self_attn.q_proj.weight"])
        assert np.array_equal(f.array("blk.1.attn_k.bias"), np.full(32, 1.5, np.float32))


def test_q4_0_keeps_the_output_head_at_q8_0(tmp_path, weights):
    d = write_checkpoint(tmp_path / "src", weights)
    with GGUFFile(convert_safetensors(d, tmp_path / "q4.gguf", quantize="q4_0")) as f:
        assert f.tensors["blk.0.attn_q.weight"].ggml_type == Q.Q4_0
        assert f.tensors["output.weight"].ggml_type == Q.Q8_0
        assert f.tensors["output_norm.weight"].ggml_type == Q.F32


# ------------------------------------------------------------------------------------------------ bad input

def expect_error(src: Path, tmp_path: Path, match: str, **kwargs) -> None:
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ConvertError, match=match):
        convert_safetensors(src, out, **kwargs)
    assert not out.exists()
    assert not list(tmp_path.rglob("*.partial")), "a failed conversion left its temporary file"


def test_missing_config(tmp_path, llama_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes((llama_dir / "model.safetensors").read_bytes())
    expect_error(src, tmp_path, "config.json is missing")


def test_unknown_architecture(tmp_path, weights):
    expect_error(write_checkpoint(tmp_path / "src", weights, arch="GPT2LMHeadModel"), tmp_path, "unsupported archi")


def test_shape_mismatch(tmp_path, weights):
    bad = dict(weights)
    bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((96, CFG.dim), np.float32)
    expect_error(write_checkpoint(tmp_path / "src", bad), tmp_path, "up_proj.weight' has shape")


def test_missing_and_unexpected_tensors(tmp_path, weights):
    fewer = {k: v for k, v in weights.items() if "layers.1.mlp.gate" not in k}
    expect_error(write_checkpoint(tmp_path / "a", fewer), tmp_path, "lacks 1 tensors")
    more = {**weights, "model.layers.0.self_attn.rotary_extra.weight": np.zeros(4, np.float32)}
    expect_error(write_checkpoint(tmp_path / "b", more), tmp_path, "unexpected tensor")


def test_absurd_config_numbers_are_refused_before_allocating(tmp_path, weights):
    expect_error(write_checkpoint(tmp_path / "a", weights, num_hidden_layers=10**12), tmp_path, "num_hidden_layers")
    expect_error(write_checkpoint(tmp_path / "b", weights, vocab_size=10**9), tmp_path, "has shape")
    expect_error(write_checkpoint(tmp_path / "c", weights, hidden_size="64"), tmp_path, "hidden_size")


def test_corrupt_safetensors(tmp_path, weights):
    src = write_checkpoint(tmp_path / "src", weights)
    (src / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")     # header claims 1 EiB
    expect_error(src, tmp_path, "model.safetensors")
    data = (tmp_path / "ok.safetensors")
    save_file(weights, str(data))
    (src / "model.safetensors").write_bytes(data.read_bytes()[:-100])                 # truncated tensor data
    expect_error(src, tmp_path, "model.safetensors")


def test_tokenizer_problems(tmp_path, weights):
    src = write_checkpoint(tmp_path / "src", weights)
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.model").write_bytes(b"\x0a\x00")
    expect_error(src, tmp_path, "SentencePiece")
    (src / "tokenizer.json").write_text("{not json")
    expect_error(src, tmp_path, "not valid JSON")
    (src / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [5]}))
    expect_error(src, tmp_path, "malformed config or tokenizer JSON")


def test_config_of_the_wrong_shape(tmp_path, weights):
    src = write_checkpoint(tmp_path / "src", weights, rope_scaling=[1, 2])
    expect_error(src, tmp_path, "malformed config")
    (src / "config.json").write_text("[]")
    expect_error(src, tmp_path, "must hold a JSON object")


def test_unknown_quantization(tmp_path, llama_dir):
    expect_error(llama_dir, tmp_path, "unknown quantization", quantize="q3_k")


def test_failure_while_writing_removes_the_partial_file_and_keeps_the_old_output(tmp_path, weights):
    bad = {**weights, "model.norm.weight": np.ones(CFG.dim, np.int32)}    # right shape, unusable dtype
    src = write_checkpoint(tmp_path / "src", bad)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    out.write_bytes(b"previous model")
    with pytest.raises(ConvertError, match="unsupported dtype I32"):
        convert_safetensors(src, out)
    assert out.read_bytes() == b"previous model"
    assert not list(out.parent.glob("*.partial"))
