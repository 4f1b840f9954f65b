"""qwen2: a tiny random qwen2 GGUF (tests/engine/models/qwen2_tiny.py) against llama.cpp's logits and token ids for
the very same file, saved by benchmarks/make_qwen2_reference.py (llama-cpp-python 0.3.36, flash attention off,
f16 KV cache).

Tolerances. At position 0 attention sees one key, its weight is exactly 1, and our one-token path agrees with
llama.cpp to a few ulps in both variants (measured 4e-6 on logits up to 20): every matrix, bias, norm and the head
are right. Elsewhere, with F32 weights, our F32 kernel sums in another order than ggml's f32 path, and values
rounded on the way (K/V to f16, softmax weights to f16) turn a last-bit difference into a whole rounding step now
and then, which later layers carry on; our own batched prefill and one-token paths differ by about 1e-3 that way.
Max |diff| 7.3e-3 on logits of std 5.5, mean 1e-3; TOL_F32 allows twice that. With Q8_0 (and Q5_0) weights every
kernel keeps llama.cpp's float order, and the logits are equal bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import engine
from engine.generate import Limits, generate
from engine.gguf import GGUFError, GGUFFile
from engine.kv_cache import Segment
from engine.models import MODEL_CLASSES
from engine.models.qwen2 import Qwen2, Qwen2Config
from engine.sampling import SamplingOptions
from tests.engine.models import qwen2_tiny as tiny

TOL_F32 = 1.5e-2             # max |logit diff|, F32 weights (measured 7.3e-3)
MEAN_TOL_F32 = 2e-3          # mean |logit diff| (measured 1.05e-3)
POSITION_0_TOL = 2e-5        # one key: no f16 softmax weights in play (measured 3.8e-6)
PATHS_TOL = 3e-3             # our batched prefill vs our one-token path (measured 1.1e-3)
GREEDY = SamplingOptions(temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((tiny.DATA_DIR / "meta.json").read_text())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple]:
    """variant -> (path, tensor sha256) of the rebuilt tiny GGUFs."""
    root = tmp_path_factory.mktemp("qwen2")
    return {v: (root / f"{v}.gguf", tiny.write_gguf(root / f"{v}.gguf", v)) for v in tiny.VARIANTS}


@pytest.fixture(scope="module")
def loaded(files) -> dict[str, engine.LoadedModel]:
    return {v: engine.load_model(path) for v, (path, _) in files.items()}


@pytest.fixture(scope="module")
def reference() -> dict[str, list[tuple[np.ndarray, int, np.ndarray]]]:
    """variant -> per sequence (ids (T,), prompt length, llama.cpp logits (T, vocab))."""
    out = {}
    for v in tiny.VARIANTS:
        data = np.load(tiny.DATA_DIR / f"{v}.npz")
        n = sum(key.startswith("ids_") for key in data.files)
        out[v] = [(data[f"ids_{i}"], int(data[f"n_prompt_{i}"]), data[f"logits_{i}"]) for i in range(n)]
    return out


@pytest.fixture(scope="module")
def ours(loaded, reference) -> dict[str, list[np.ndarray]]:
    """Our logits for the same sequences, computed the way llama.cpp did: the prompt in one batch, then the
    continuation one token at a time."""
    out = {}
    for v, sequences in reference.items():
        model = loaded[v].model
        out[v] = []
        for ids, n_prompt, _ in sequences:
            cache = model.new_cache(tiny.SHAPE.context_length)
            prefill = model.forward(ids[:n_prompt], 0, cache, all_logits=True)        # (n_prompt, vocab)
            decode = [model.forward(ids[p:p + 1], p, cache) for p in range(n_prompt, len(ids))]
            out[v].append(np.concatenate([prefill, np.array(decode)]))
    return out


def test_rebuilt_files_are_the_ones_llama_cpp_ran(files, meta):
    for v, (_, digest) in files.items():
        assert digest == meta["tensor_sha256"][v], f"{v}: the tiny model changed; rerun make_qwen2_reference"


def test_config_and_weights_from_the_file(loaded):
    model = loaded["f32"].model
    assert isinstance(model, Qwen2) and MODEL_CLASSES["qwen2"] is Qwen2
    s = tiny.SHAPE
    assert model.cfg == Qwen2Config(
        n_layer=s.n_layer, dim=s.dim, n_head=s.n_head, n_kv_head=s.n_kv_head, head_dim=s.head_dim,
        ffn_dim=s.ffn_dim, norm_eps=float(np.float32(s.eps)), rope_base=s.rope_base, rope_dim=s.head_dim,
        rope_freq_scale=1.0, vocab_size=459, context_length=s.context_length)     # eps is stored as f32
    blk = model.blocks[0]
    assert blk.attn_qkv_bias.shape == ((s.n_head + 2 * s.n_kv_head) * s.head_dim,)
    assert [p.rows for p in blk.attn_qkv] == [(s.n_head + 2 * s.n_kv_head) * s.head_dim]   # one fused matrix
    mixed = loaded["q8_0"].model.blocks[1].attn_qkv                                      # q|k Q8_0, v Q5_0
    assert [(p.ggml_type.name, p.rows) for p in mixed] == [("Q8_0", 192), ("Q5_0", 64)]
    assert model.output is model.token_embd                                                 # tied head
    assert loaded["q8_0"].model.output is not loaded["q8_0"].model.token_embd


def test_yarn_rope_scaling_is_refused(loaded):
    md = {**loaded["f32"].metadata, "qwen2.rope.scaling.type": "yarn", "qwen2.rope.scaling.factor": 4.0}
    with pytest.raises(GGUFError, match="yarn"):
        Qwen2Config.from_metadata(md)
    md["qwen2.rope.scaling.type"] = "linear"
    assert Qwen2Config.from_metadata(md).rope_freq_scale == 0.25


def test_tokenizer_ids_equal_llama_cpp(loaded):
    tok = loaded["f32"].tokenizer
    cases = json.loads((tiny.DATA_DIR / "tokenizer.json").read_text())["cases"]
    assert {c["text"] for c in cases} == {*tiny.TOKENIZER_STRINGS, *tiny.PROMPTS}
    for case in cases:
        assert tok.encode(case["text"], add_special=True, parse_special=True) == case["special"], case["text"]
        assert tok.encode(case["text"], add_special=True, parse_special=False) == case["plain"], case["text"]
    assert tok.add_bos is False and tok.eog_ids >= {456, 458}    # <|endoftext|>, <|im_end|>


def test_reference_sequences_start_with_our_tokenization_of_the_prompts(loaded, reference):
    tok = loaded["f32"].tokenizer
    for text, (ids, n_prompt, _) in zip(tiny.PROMPTS, reference["f32"], strict=False):
        assert tok.encode(text, add_special=True, parse_special=True) == ids[:n_prompt].tolist()


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_position_0_matches_llama_cpp_to_float_rounding(loaded, reference, variant):
    model = loaded[variant].model
    for ids, _, want in reference[variant]:
        got = model.forward(ids[:1], 0, model.new_cache(8))                    # the one-token (decode) path
        np.testing.assert_allclose(got, want[0], rtol=0, atol=POSITION_0_TOL)


def test_f32_logits_match_llama_cpp(ours, reference):
    for i, (got, (_, _, want)) in enumerate(zip(ours["f32"], reference["f32"], strict=True)):
        diff = np.abs(got - want)
        assert diff.max() < TOL_F32 and diff.mean() < MEAN_TOL_F32, (i, diff.max(), diff.mean())
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1), err_msg=f"sequence {i}")


def test_q8_0_logits_equal_llama_cpp_bit_for_bit(ours, reference):
    """Q8_0 and Q5_0 weights go through the kernels that keep llama.cpp's float order (and attention, norms, RoPE,
    SiLU with it): prompt and one-token continuation logits are llama.cpp's float32 values exactly. (F32 weights
    take another kernel whose order is not ggml's: the tolerance test above.)"""
    for i, (got, (_, _, want)) in enumerate(zip(ours["q8_0"], reference["q8_0"], strict=True)):
        np.testing.assert_array_equal(got, want, err_msg=f"sequence {i}")


def test_decode_one_at_a_time_matches_batched_prefill(loaded, reference):
    model = loaded["f32"].model
    ids = reference["f32"][3][0]
    batched = model.forward(ids, 0, model.new_cache(64), all_logits=True)      # (T, vocab)
    cache = model.new_cache(64)
    stepwise = np.array([model.forward(ids[p:p + 1], p, cache) for p in range(len(ids))])
    np.testing.assert_allclose(stepwise, batched, rtol=0, atol=PATHS_TOL)


def test_batched_segments_equal_separate_forwards(loaded, reference):
    """Two sequences in one forward_batch (one decoding a token, one reading its whole prompt) get the logits
    each gets alone."""
    model = loaded["f32"].model
    a, b = reference["f32"][1][0], reference["f32"][2][0]
    alone = [model.forward(p, 0, model.new_cache(64)) for p in (a, b)]
    cache_a, cache_b = model.new_cache(64), model.new_cache(64)
    model.forward(a[:-1], 0, cache_a)
    together = model.forward_batch([Segment(a[-1:], len(a) - 1, cache_a), Segment(b, 0, cache_b)])
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=PATHS_TOL)


def test_rerotate_keys_equals_keys_computed_at_the_shifted_positions(loaded, reference):
    model = loaded["f32"].model
    ids = reference["f32"][3][0][:30]
    shifted = model.new_cache(64)
    model.forward(ids, 9, shifted)                     # keys computed at positions 9..38
    model.rerotate_keys(shifted, 9, 9 + len(ids), -6)  # ... moved to 3..32
    direct = model.new_cache(64)
    model.forward(ids, 3, direct)
    # layer 0's keys depend only on the token and its position (deeper layers also see the zeroed prefix)
    np.testing.assert_allclose(shifted.k[0, :, 9:9 + len(ids)], direct.k[0, :, 3:3 + len(ids)], rtol=2e-3, atol=4e-3)
    assert not np.allclose(shifted.k[0, :, 9:9 + len(ids)], direct.k[0, :, 9:9 + len(ids)], atol=0.1)


@pytest.mark.parametrize("sequence", [1, 2])
def test_load_model_and_generate_greedy_matches_llama_cpp(loaded, reference, sequence):
    lm = loaded["f32"]
    ids, n_prompt, _ = reference["f32"][sequence]
    prompt = lm.tokenizer.encode(tiny.PROMPTS[sequence], parse_special=True)
    limits = Limits(num_predict=len(ids) - n_prompt, num_ctx=tiny.SHAPE.context_length)
    steps = list(generate(lm.model, lm.tokenizer, lm.model.new_cache(limits.num_ctx), prompt, GREEDY, limits))
    assert [s.token for s in steps if s.token is not None] == ids[n_prompt:].tolist()
    assert steps[-1].done_reason == "length" and steps[-1].context == tuple(ids.tolist())


def test_qwen2_chat_template_is_imported_as_chatml(files, tmp_path):
    from api.gguf_import import import_gguf
    from registry import chat_templates
    from registry.manifest import MEDIA_PARAMS, MEDIA_TEMPLATE
    from registry.names import ModelName
    from registry.store import Store

    store, name = Store(tmp_path), ModelName.parse("qwen2-tiny:f32")
    import_gguf(store, name, files["f32"][0])
    manifest, _ = store.read_manifest(name)
    chatml = chat_templates.load("chatml")
    assert store.read_blob(manifest.layer(MEDIA_TEMPLATE).digest).decode() == chatml.template
    assert json.loads(store.read_blob(manifest.layer(MEDIA_PARAMS).digest)) == chatml.params


def test_a_tool_calling_template_far_from_every_known_one_imports_with_its_jinja(tmp_path):
    """Qwen2.5's template (ChatML plus a long tools section) is more than 100 edits from every template Ollama
    knows: the import keeps the model and its own Jinja template (rendered sandboxed; Ollama stores none)."""
    from api.gguf_import import import_gguf
    from registry.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
    from registry.names import ModelName
    from registry.store import Store

    tools = ("{%- if tools %}{{- '<|im_start|>system\n# Tools\n\nFunction signatures, one per line:\n<tools>' }}"
             "{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
             "{{- '\n</tools>\nAnswer a call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>' }}"
             "{{- '<|im_end|>\n' }}{%- endif %}")
    path = tmp_path / "tools.gguf"
    tiny.write_gguf(path, "q8_0", replace(tiny.SHAPE, n_layer=1), chat_template=tools + tiny.QWEN2_CHAT_TEMPLATE)
    store, name = Store(tmp_path / "store"), ModelName.parse("qwen2-tools")
    import_gguf(store, name, path)
    manifest, _ = store.read_manifest(name)
    assert manifest.layer(MEDIA_MODEL) is not None
    stored = store.read_blob(manifest.layer(MEDIA_TEMPLATE).digest).decode()
    assert stored == tools + tiny.QWEN2_CHAT_TEMPLATE
    with GGUFFile(path) as f:
        assert Qwen2.from_gguf(f).cfg.n_layer == 1
