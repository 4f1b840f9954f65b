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


@pytest.mark.parametrize("neox, window, n_past", [(False, 0, 0), (False, 0, 37), (True, 0, 20), (True, 8, 30)])
def test_attend_one_token_equals_rope_write_attend(rng, neox, window, n_past):
    n_head, n_kv, d = 6, 2, 16
    table = ops.RopeTable(d, 10000.0)
    rope = ops.rope_neox if neox else ops.rope_normal
    past_k = rng.standard_normal((n_past, n_kv, d)).astype(np.float32)
    past_v = rng.standard_normal((n_past, n_kv, d)).astype(np.float32)
    q = rng.standard_normal((n_head, d)).astype(np.float32)
    k = rng.standard_normal((n_kv, d)).astype(np.float32)
    v = rng.standard_normal((n_kv, d)).astype(np.float32)
    cos, sin = table.angles(np.array([n_past]))

    numpy_cache, jit_cache = (KVCache(1, n_kv, d, 64) for _ in range(2))
    for cache in (numpy_cache, jit_cache):
        cache.reserve(n_past + 1)
        cache.write(0, 0, past_k, past_v)
    numpy_cache.write(0, n_past, rope(k[None], cos, sin), v[None])
    want = ops.attention(rope(q[None], cos, sin), numpy_cache.keys(0, n_past + 1), numpy_cache.values(0, n_past + 1),
                         n_past, 0.25, window)[0]
    got = ops_jit.attend(q[None], k[None], v[None], jit_cache.kt[0], jit_cache.v[0], n_past, cos, sin, 0.25, window,
                         neox)[0]
    np.testing.assert_array_equal(jit_cache.k[0, :, n_past], numpy_cache.k[0, :, n_past])   # same f16 rounding
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


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
def test_attend_is_bit_identical_however_the_prompt_is_chunked(rng, neox, window):
    """Whole prompt, two chunks, or token by token: the same cache bits and outputs (seeded sampling repeats)."""
    T, n_head, n_kv, d = 40, 4, 2, 16          # > PARALLEL_ROWS: the whole-prompt call takes the threaded path
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
    for bounds in ([0, 7, T], [0, 20, T], list(range(T + 1))):
        out, keys = run(bounds)
        np.testing.assert_array_equal(out, whole)
        np.testing.assert_array_equal(keys, whole_k)
