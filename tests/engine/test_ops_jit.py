"""The Numba decode kernels against their NumPy twins in engine.ops."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ops, ops_jit
from engine.kv_cache import KVCache


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_rms_norm_equals_twin(rng):
    x = rng.standard_normal((3, 576)).astype(np.float32) * 5
    w = rng.standard_normal(576).astype(np.float32)
    np.testing.assert_allclose(ops_jit.rms_norm(x, w, 1e-5), ops.rms_norm(x, w, 1e-5), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("d", [16, 8, 24])                   # 8, 24: head sizes off the 16-lane grid
@pytest.mark.parametrize("neox, window, n_past", [(False, 0, 0), (False, 0, 37), (True, 0, 20), (True, 8, 30),
                                                  (False, 0, 300), (True, 100, 299)])
@pytest.mark.parametrize("n_head, n_kv", [(6, 2), (9, 3), (4, 1), (5, 1), (4, 4)])   # heads shared by threads
def test_attend_one_token_equals_rope_write_attend(rng, neox, window, n_past, d, n_head, n_kv):
    table = ops.RopeTable(d, 10000.0)
    rope = ops.rope_neox if neox else ops.rope_normal
    past_k = rng.standard_normal((n_past, n_kv, d)).astype(np.float32)
    past_v = rng.standard_normal((n_past, n_kv, d)).astype(np.float32)
    q = rng.standard_normal((n_head, d)).astype(np.float32)
    k = rng.standard_normal((n_kv, d)).astype(np.float32)
    v = rng.standard_normal((n_kv, d)).astype(np.float32)
    cos, sin = table.angles(np.array([n_past]))

    numpy_cache, jit_cache = (KVCache(1, n_kv, d, max(64, n_past + 1)) for _ in range(2))
    for cache in (numpy_cache, jit_cache):
        cache.reserve(n_past + 1)
        cache.write(0, 0, past_k, past_v)
    numpy_cache.write(0, n_past, rope(k[None], cos, sin), v[None])
    want = ops.attention(rope(q[None], cos, sin), numpy_cache.keys(0, n_past + 1), numpy_cache.values(0, n_past + 1),
                         n_past, 0.25, window)[0]
    got = ops_jit.attend(q[None], k[None], v[None], jit_cache.kt[0], jit_cache.v[0], n_past, cos, sin, 0.25, window,
                         neox)[0]
    np.testing.assert_array_equal(jit_cache.k[0, :, n_past], numpy_cache.k[0, :, n_past])   # same f16 rounding
    np.testing.assert_array_equal(got, want)                                       # same float order


@pytest.mark.parametrize("n_head, n_kv", [(6, 2), (9, 3), (5, 1), (8, 2)])
def test_a_decoding_token_gives_the_same_bits_however_its_heads_are_split(rng, n_head, n_kv):
    """attend splits each KV head's query heads into as many runs as fill the threads; any split is the serial bits."""
    d, pos, window = 32, 150, 0
    cache = KVCache(1, n_kv, d, 256)
    cache.reserve(pos + 1)
    cache.write(0, 0, *(rng.standard_normal((2, pos + 1, n_kv, d)).astype(np.float32)))
    q = rng.standard_normal((1, n_head, d)).astype(np.float32)
    want = np.zeros((1, n_head * d), np.float32)
    ops_jit._attend_rows(q, cache.kt[0], cache.v[0], pos, np.float32(0.2), window, want)
    for parts in range(1, n_head // n_kv + 1):
        got = np.zeros(n_head * d, np.float32)
        ops_jit._attend_token_parallel(q[0], cache.kt[0], cache.v[0], pos, np.float32(0.2), window, got, parts)
        np.testing.assert_array_equal(got, want[0])


def test_round_f16_equals_numpy_cast(rng):
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 20000),
                        np.array([0.0, -0.0, 65504, 65519.99, 65520, -70000, 6.1e-5, 6.0e-5, 1e-8, np.inf, -np.inf],
                                 np.float32)]).astype(np.float32)
    y = x.copy()
    ops_jit.round_f16(y)
    with np.errstate(over="ignore"):                  # values past 65504 are meant to become inf
        want = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("neox, window", [(False, 0), (True, 5)])
def test_attend_gives_the_same_bits_for_any_prompt_chunks_of_two_or_more(rng, neox, window):
    """Whole prompt or chunks of >= 2 tokens: the same cache bits and outputs (llama.cpp's batch order). Token by
    token takes ggml_vec_dot_f16's order, as llama.cpp does for a batch of one: close, not identical."""
    T, n_head, n_kv, d = 40, 4, 2, 64          # > PARALLEL_ROWS: the whole-prompt call takes the threaded path
    table = ops.RopeTable(d, 10000.0)
    q = rng.standard_normal((T, n_head, d)).astype(np.float32)
    k = rng.standard_normal((T, n_kv, d)).astype(np.float32)
    v = rng.standard_normal((T, n_kv, d)).astype(np.float32)
    cos, sin = table.angles(np.arange(T))

    def run(bounds):
        cache = KVCache(1, n_kv, d, 64)
        cache.reserve(T)
        outs = [ops_jit.attend(q[a:b], k[a:b], v[a:b], cache.kt[0], cache.v[0], a, cos[a:b], sin[a:b], 0.25, window,
                               neox) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return np.concatenate(outs), cache.k[0, :, :T].copy()

    whole, whole_k = run([0, T])
    for bounds in ([0, 7, T], [0, 20, T], [0, 2, 4, 30, T]):
        out, keys = run(bounds)
        np.testing.assert_array_equal(out, whole)
        np.testing.assert_array_equal(keys, whole_k)
    stepwise, keys = run(list(range(T + 1)))
    np.testing.assert_array_equal(keys, whole_k)                                     # K itself never depends on T
    if not window:               # (a 5-key window stays in one 16-lane chunk, where both orders agree after f16 P)
        assert not np.array_equal(stepwise, whole)                                   # the decode order is in use
    np.testing.assert_allclose(stepwise, whole, rtol=1e-4, atol=1e-5)


def test_kernels_match_llama_cpp_float_order_on_known_values():
    """Hand-checked pieces of ggml's arithmetic: rms_norm's float64 sum of float32 squares, libm cosf angles."""
    x = np.array([[3.0, 4.0] * 288], np.float32)                                    # mean square 12.5
    out = ops_jit.rms_norm(x, np.ones(576, np.float32), 1e-5)
    assert out[0, 0] == np.float32(3.0) * (np.float32(1.0) / np.sqrt(np.float32(12.5) + np.float32(1e-5)))
    cos, sin = ops_jit.rope_angles(3, 4, 10000.0, 1.0)
    assert cos[2, 1] == np.float32(np.cos(np.float64(np.float32(2.0) * np.float32(0.01))))   # theta = 2 · 10000^-1/2
    twin_cos, twin_sin = ops.rope_angles(3, 4, 10000.0, 1.0)
    np.testing.assert_array_equal(cos, twin_cos)
    np.testing.assert_array_equal(sin, twin_sin)


def test_geglu_equals_numpy_table_lookup_everywhere(rng):
    """Boundaries (±10), fp16 subnormals and zeros included: same fp16 bits, same table entry."""
    from engine.models.gemma3 import _gelu_table, gelu_fp16_table

    gate = np.concatenate([rng.standard_normal(4000) * 5, rng.standard_normal(2000) * 1e-5,
                           [-10, 10, 9.999, -9.999, 0.0, -0.0, 65.0, -65.0, 6.1e-5, 5.9e-8]]).astype(np.float32)
    up = rng.standard_normal(gate.size).astype(np.float32)
    got = ops_jit.geglu(np.concatenate([gate, up])[None], gate.size, _gelu_table())[0]
    np.testing.assert_array_equal(got, gelu_fp16_table(gate) * up)
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        twin = ops.gelu_tanh(halves).astype(np.float16).astype(np.float32)  # NumPy's tanh, not libm's tanhf
    used = np.abs(halves) < 10                                             # the only entries geglu reads
    assert np.mean(_gelu_table()[used] == twin[used]) > 0.99
    # below about -1.5, 1 + tanh cancels and a 1-ulp tanhf difference becomes a few fp16 steps of a tiny value
    np.testing.assert_allclose(_gelu_table()[used], twin[used], rtol=2.0**-10, atol=2e-6)


@pytest.mark.parametrize("neox, window", [(False, 0), (True, 4)])
def test_decoding_step_attends_every_sequence_as_alone(rng, neox, window):
    """A batch of one-token segments (one compiled call for all sequences) equals ``attend`` per sequence, bit for
    bit, with cache lengths before and past the window."""
    from engine.kv_cache import Segment, SegmentBatch

    n_head, n_kv, d, n_layer, layer = 4, 2, 32, 3, 1
    table = ops.RopeTable(d, 10000.0)
    lengths = [9, 0, 3, 17]                                  # cached positions before the new token
    q = rng.standard_normal((len(lengths), n_head, d)).astype(np.float32)
    k = rng.standard_normal((len(lengths), n_kv, d)).astype(np.float32)
    v = rng.standard_normal((len(lengths), n_kv, d)).astype(np.float32)
    cos, sin = table.angles(np.array(lengths))

    def filled_caches():
        caches = [KVCache(n_layer, n_kv, d, 64) for _ in lengths]
        for n, cache in zip(lengths, caches, strict=True):
            cache.reserve(n + 1)                              # room for the new token
            cache.write(layer, 0, *(np.random.default_rng(n).standard_normal((2, n, n_kv, d)).astype(np.float32)))
        return caches

    alone = filled_caches()
    want = np.concatenate([ops_jit.attend(q[i:i + 1], k[i:i + 1], v[i:i + 1], c.kt[layer], c.v[layer], n,
                                          cos[i:i + 1], sin[i:i + 1], 0.25, window, neox)
                           for i, (n, c) in enumerate(zip(lengths, alone, strict=True))])
    together = filled_caches()
    batch = SegmentBatch([Segment(np.zeros(1, np.int64), n, c) for n, c in zip(lengths, together, strict=True)])
    assert batch.decoding
    got = ops_jit.attend_segments(q, k, v, batch, layer, cos, sin, 0.25, window, neox)
    np.testing.assert_array_equal(got, want)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(b.kt, a.kt)
        np.testing.assert_array_equal(b.v, a.v)


@pytest.mark.parametrize("tokens", [1, 5])                       # serial and threaded paths
def test_silu_mul_equals_twin(rng, tokens):
    gate_up = (rng.standard_normal((tokens, 2 * 96)) * 6).astype(np.float32)
    np.testing.assert_array_equal(ops_jit.silu_mul(gate_up, 96), ops.silu_mul(gate_up, 96))
