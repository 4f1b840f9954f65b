"""LoRA adapters on a tiny llama: the adapted logits must equal a NumPy forward over merged weights
W + s·B·A (computed independently), and adapters that do not fit must be refused without changing the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from gguf.constants import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

import engine
from engine.lora import LoraError, apply_lora
from engine.tokenizer.special import TokenType
from tests.engine.llama_reference import TinyConfig, forward, random_llama
from tests.engine.tokenizer.helpers import tiny_bpe_metadata

CFG = TinyConfig()
TOKENS = [3, 77, 250, 11, 300, 5, 129]
HF_TO_GGUF = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
              "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm"}
QUANTIZED = "blk.1.ffn_down.weight"          # one Q8_0 base weight: adapters work on any type


def gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        _, _, i, rest = hf.split(".", 3)
        return f"blk.{i}.{HF_TO_GGUF[rest.removesuffix('.weight')]}.weight"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def hf_name(gguf: str) -> str:
    return next(k for k in BASE if gguf_name(k) == gguf)


BASE = random_llama(CFG, seed=3)                 # read as GGUF layout: the reference uses adjacent-pair RoPE
BASE[hf_name(QUANTIZED)] = gguf_dequantize(gguf_quantize(BASE[hf_name(QUANTIZED)], Q.Q8_0), Q.Q8_0)


def write_base(path: Path, tied: bool = False) -> Path:
    w = GGUFWriter(path, "llama")
    for key, value in {"block_count": CFG.n_layer, "embedding_length": CFG.dim, "feed_forward_length": CFG.ffn_dim,
                       "attention.head_count": CFG.n_head, "attention.head_count_kv": CFG.n_kv_head,
                       "context_length": 256}.items():
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", CFG.eps)
    md = tiny_bpe_metadata({f"<x{i}>": TokenType.CONTROL for i in range(CFG.vocab - 256)})
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "gpt-2")
    w.add_array("tokenizer.ggml.tokens", md["tokenizer.ggml.tokens"])
    w.add_array("tokenizer.ggml.token_type", [int(t) for t in md["tokenizer.ggml.token_type"]])
    for hf, value in BASE.items():
        name = gguf_name(hf)
        if tied and name == "output.weight":
            continue
        if name == QUANTIZED:
            w.add_tensor(name, gguf_quantize(value, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_adapter(path: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float,
                  arch: str = "llama", kind: str = "adapter") -> Path:
    w = GGUFWriter(path, arch)
    w.add_string("general.type", kind)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, (a, b) in pairs.items():
        w.add_tensor(f"{name}.lora_a", a)
        w.add_tensor(f"{name}.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def random_pairs(names: list[str], r: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """lora_a (r, in) and lora_b (out, r) for each named base weight, big enough to move the logits."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        rows, cols = BASE[hf_name(name)].shape
        out[name] = ((rng.standard_normal((r, cols)) / np.sqrt(cols)).astype(np.float32),
                     (rng.standard_normal((rows, r)) / np.sqrt(4 * r)).astype(np.float32))
    return out


def merged(adapters: list[tuple[dict, float]]) -> dict[str, np.ndarray]:
    """The base weights with every adapter merged in: W + s · B @ A."""
    w = dict(BASE)
    for pairs, s in adapters:
        for name, (a, b) in pairs.items():
            w[hf_name(name)] = w[hf_name(name)] + s * (b.astype(np.float64) @ a)
    return w


def logits(loaded) -> np.ndarray:
    model = loaded.model
    return model.forward(np.array(TOKENS), 0, model.new_cache(32), all_logits=True)


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert np.max(np.abs(ours - ref)) < 1e-2 * np.max(np.abs(ref))   # the Q8_0 weight's 8-bit activations


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> Path:
    return write_base(tmp_path_factory.mktemp("base") / "base.gguf")


@pytest.fixture
def model(base_path):
    return engine.load_model(base_path)      # fresh per test: apply_lora changes the model in place


ADAPTED = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_v.weight", "blk.0.attn_output.weight",
           "blk.1.ffn_gate.weight", "blk.0.ffn_up.weight", QUANTIZED, "output.weight"]


def test_base_model_matches_the_reference(model):
    assert_close(logits(model), forward(BASE, CFG, TOKENS, rope="normal"))


def test_adapter_equals_merged_weights(model, tmp_path):
    pairs = random_pairs(ADAPTED, r=4, seed=1)
    norm_pair = (np.ones((4, CFG.dim), np.float32), np.ones((1, 4), np.float32))   # ignored, as llama.cpp
    apply_lora(model.model, write_adapter(tmp_path / "a.gguf", {**pairs, "blk.0.attn_norm.weight": norm_pair},
                                          alpha=8.0))
    ref = forward(merged([(pairs, 8.0 / 4)]), CFG, TOKENS, rope="normal")
    ours = logits(model)
    assert_close(ours, ref)
    base = forward(BASE, CFG, TOKENS, rope="normal")
    assert np.max(np.abs(ref - base)) > 20 * np.max(np.abs(ours - ref))            # the adapter really matters


def test_user_scale_without_alpha_and_two_adapters_add_up(model, tmp_path):
    first = random_pairs(["blk.0.attn_v.weight", "blk.1.ffn_up.weight"], r=2, seed=2)
    second = random_pairs(["blk.0.attn_v.weight", "blk.1.attn_q.weight"], r=8, seed=3)
    apply_lora(model.model, write_adapter(tmp_path / "1.gguf", first, alpha=0.0), scale=0.5)   # s = scale
    apply_lora(model.model, write_adapter(tmp_path / "2.gguf", second, alpha=4.0), scale=2.0)  # s = 2 · 4 / 8
    ref = forward(merged([(first, 0.5), (second, 1.0)]), CFG, TOKENS, rope="normal")
    assert_close(logits(model), ref)


def test_decoding_with_a_cache_sees_the_adapter(model, tmp_path):
    """Single-token steps take the matvec path: the low-rank term must apply there too."""
    pairs = random_pairs(["blk.0.attn_q.weight", QUANTIZED, "output.weight"], r=4, seed=4)
    apply_lora(model.model, write_adapter(tmp_path / "a.gguf", pairs, alpha=4.0))
    m, cache = model.model, model.model.new_cache(32)
    m.forward(np.array(TOKENS[:-1]), 0, cache)
    last = m.forward(np.array(TOKENS[-1:]), len(TOKENS) - 1, cache)
    ref = forward(merged([(pairs, 1.0)]), CFG, TOKENS, rope="normal")[-1]
    assert np.max(np.abs(last - ref)) < 1e-2 * np.max(np.abs(ref))


@pytest.mark.parametrize("case, match", [
    ("arch", "architecture 'gemma3'"),
    ("not_adapter", "not a LoRA adapter"),
    ("in_features", "adapter maps 48 -> 32 features"),
    ("out_rows", "adapter maps 64 -> 64 features, the base weight 64 -> 32"),
    ("rank", "rank"),
    ("half", "only one of lora_a / lora_b"),
    ("layer", "has 2 layers"),
    ("embedding", "not supported"),
    ("unknown", "no such tensor"),
])
def test_mismatched_adapters_are_refused_and_change_nothing(model, tmp_path, case, match):
    rng = np.random.default_rng(0)
    good = random_pairs(["blk.0.attn_q.weight"], r=4, seed=5)             # valid, listed first: must not stick
    a, b = (rng.standard_normal((4, 64)).astype(np.float32), rng.standard_normal((32, 4)).astype(np.float32))
    bad = {"arch": ("blk.0.attn_k.weight", (a, b)), "not_adapter": ("blk.0.attn_k.weight", (a, b)),
           "in_features": ("blk.0.attn_k.weight", (a[:, :48], b)),
           "out_rows": ("blk.0.attn_k.weight", (a, np.zeros((64, 4), np.float32))),
           "rank": ("blk.0.attn_k.weight", (a, b[:, :3])), "half": ("blk.0.attn_k.weight", (a, None)),
           "layer": ("blk.2.attn_k.weight", (a, b)), "embedding": ("token_embd.weight", (a, b)),
           "unknown": ("blk.0.ffn_gate_inp.weight", (a, b))}[case]
    pairs = {**good, bad[0]: bad[1]}
    path = tmp_path / "bad.gguf"
    if case == "half":
        write_half(path, pairs)
    else:
        write_adapter(path, pairs, alpha=4.0, arch="gemma3" if case == "arch" else "llama",
                      kind="model" if case == "not_adapter" else "adapter")
    before = logits(model)
    with pytest.raises(LoraError, match=match):
        apply_lora(model.model, path)
    assert np.array_equal(logits(model), before)


def write_half(path: Path, pairs: dict) -> None:
    w = GGUFWriter(path, "llama")
    w.add_string("general.type", "adapter")
    for name, (a, b) in pairs.items():
        w.add_tensor(f"{name}.lora_a", a)
        if b is not None:
            w.add_tensor(f"{name}.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_output_adapter_on_a_tied_model_is_refused(tmp_path):
    loaded = engine.load_model(write_base(tmp_path / "tied.gguf", tied=True))
    pairs = random_pairs(["output.weight"], r=2, seed=6)
    with pytest.raises(LoraError, match="ties its output head"):
        apply_lora(loaded.model, write_adapter(tmp_path / "a.gguf", pairs, alpha=2.0))
