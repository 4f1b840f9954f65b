"""The attention kernel (ops_jit._attend_one and its vector helpers) gives its NumPy twin's bits (engine.ops.attention,
llama.cpp's float order), over head sizes, group sizes, context lengths around the 16- and 64-position steps, cache
capacities, sliding windows, both accumulator orders (a decoding step's and a prompt chunk's) and extreme score
ranges, with NaN and inf planted where no result may read.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from engine import ops, ops_jit
from engine.fpmath import (
    add16,
    floats4,
    fma16,
    fma_np,
    halves16,
    hmax16,
    hsum16,
    load16,
    max16,
    reduce16_np,
    rows4,
    splat16,
    store16,
    zeros16,
)

# ---- tests ---------------------------------------------------------------------------------------------------------


def _cache(rng, n_kv, d, capacity, end, first, scale_exp):
    """K (transposed) and V caches of f16 bits holding values of mixed magnitudes (subnormal halves included) at
    positions < end; past end NaN and inf (stale data that must never reach a result), and in K also before
    ``first`` (the window: those keys are never scored, while V rows from the chunk start are read as llama.cpp
    reads them, times probability 0)."""
    def halves(shape):
        magnitude = 10.0 ** rng.uniform(-6, scale_exp, shape)
        return (rng.standard_normal(shape) * magnitude).clip(-60000, 60000).astype(np.float16)

    k = halves((n_kv, capacity, d))
    v = halves((n_kv, capacity, d))
    k[:, end:] = np.float16(np.nan)
    k[:, end::3] = np.float16(np.inf)
    k[:, :first] = np.float16(np.nan)
    v[:, end:] = np.float16(-np.inf)
    v[:, end + 1::2] = np.float16(np.nan)
    kt = np.ascontiguousarray(k.transpose(0, 2, 1)).view(np.uint16)
    return kt, np.ascontiguousarray(v).view(np.uint16)


def _twin(q, kt, v, first, end, scale, decode):
    """engine.ops.attention (the NumPy twin) for the query at position end - 1 attending from ``first``: alone (a
    decoding step's float order), or as the first row of a two-token batch (a prompt chunk's)."""
    n_kv, d = kt.shape[0], kt.shape[1]
    keys = kt.view(np.float16).transpose(0, 2, 1)[:, :end]                  # (n_kv, end, d), nothing past end
    values = v.view(np.float16)[:, :end]
    extra = np.zeros((n_kv, 0 if decode else 1, d), np.float16)             # the batch's second token
    queries = np.concatenate([q[None], np.zeros((extra.shape[1], *q.shape), np.float32)])
    out = ops.attention(queries, np.concatenate([keys, extra], 1), np.concatenate([values, extra], 1), end - 1,
                        scale, end - first)
    return out[0]


def _check_same_bits(rng, d, group, n_kv, first, end, capacity, decode, scale_exp=2.0, scale=0.125):
    kt, v = _cache(rng, n_kv, d, capacity, end, first, scale_exp)
    q = rng.standard_normal((n_kv * group, d)) * 10.0 ** rng.uniform(scale_exp - 4, scale_exp)
    q = q.clip(-60000, 60000).astype(np.float16).astype(np.float32)     # the f16-rounded query of _store
    got = np.full(n_kv * group * d, -7.0, np.float32)
    ops_jit._attend_one(q, kt, v, first, end, scale, got, decode)
    want = _twin(q, kt, v, first, end, scale, decode)
    assert np.isfinite(want).all()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                  err_msg=f"d={d} group={group} first={first} end={end} cap={capacity} {decode=}")


# context lengths around the 16- and 64-position steps, and long ones
ENDS = [1, 2, 15, 16, 17, 20, 31, 32, 33, 47, 48, 50, 63, 64, 65, 100, 127, 128, 129, 191, 192, 193, 255, 256, 257,
        300, 319, 320, 321, 511, 512, 513, 700]


@pytest.mark.parametrize("d, group", [(64, 3), (64, 1), (128, 4), (256, 4), (64, 8), (16, 3), (32, 2), (80, 2)])
@pytest.mark.parametrize("decode", [True, False])
def test_attend_one_gives_the_twins_bits_at_every_length(d, group, decode):
    rng = np.random.default_rng(d * 10 + group)
    for end in ENDS:
        capacity = [end, end + 1, end + 15, end + 16, max(256, end), max(256, end) * 2][end % 6]
        scale_exp = [0.5, 1.0, 2.0][end % 3]                     # flat to peaked softmaxes
        _check_same_bits(rng, d, group, 1 + end % 3, 0, end, capacity, decode, scale_exp)


@pytest.mark.parametrize("decode", [True, False])
def test_attend_one_gives_the_twins_bits_in_sliding_windows(decode):
    """first > 0: the first 16-position chunk is partly masked, and in decode its accumulator is not a0."""
    rng = np.random.default_rng(7)
    for trial in range(120):
        end = int(rng.integers(1, 700))
        first = int(rng.integers(0, end))
        window_like = trial % 3 == 0                            # gemma3-style: a window of 512 at most
        if window_like:
            first = max(0, end - int(rng.integers(1, 513)))
        d, group = [(64, 3), (256, 4), (128, 1), (16, 8)][trial % 4]
        capacity = end + int(rng.integers(0, 40)) if trial % 2 else end
        _check_same_bits(rng, d, group, 1 + trial % 2, first, end, capacity, decode)


@pytest.mark.parametrize("decode", [True, False])
def test_attend_one_gives_the_twins_bits_for_extreme_scores(decode):
    """Large scores spread the softmax over many binades: most probabilities are exact zeros (expf underflow) or
    f16 subnormals; tiny ones make it nearly uniform. Scale 1 is gemma3's (q_scale applied before)."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        end = int(rng.integers(1, 400))
        scale_exp = [4.5, 3.0, 1.5, 1.0, -3.0][trial % 5]
        scale = [0.125, 1.0, 0.0625][trial % 3]
        _check_same_bits(rng, [64, 256][trial % 2], 3, 2, 0, end, end + trial % 20, decode, scale_exp, scale)


def test_capacity_shorter_than_a_chunk():
    """A cache of fewer than 16 positions: the last block cannot be taken from the cache's end."""
    rng = np.random.default_rng(3)
    for capacity in range(1, 16):
        for end in {1, capacity}:
            for decode in (True, False):
                _check_same_bits(rng, 64, 3, 3, 0, end, capacity, decode)


# ---- the vector pieces of engine.fpmath against their scalar meaning ------------------------------------------------


@njit(cache=True)
def _vector_ops(x, y, z, c):
    """Rows of x, y, z (n, 16): fma16 with a vector and with a scalar first operand, add16, max16 from -inf,
    hsum16 and hmax16 of x; zeros16 + store16 / load16 round trip."""
    n = x.shape[0]
    fma_v, fma_s, added = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    biggest, sums, maxima = np.empty_like(x), np.empty(n, np.float32), np.empty(n, np.float32)
    for r in range(n):
        xv, yv, zv = load16(x, 16 * r), load16(y, 16 * r), load16(z, 16 * r)
        store16(fma_v, 16 * r, fma16(xv, yv, zv))
        store16(fma_s, 16 * r, fma16(c, yv, add16(zv, zeros16())))
        store16(added, 16 * r, add16(xv, yv))
        store16(biggest, 16 * r, max16(max16(splat16(np.float32(-np.inf)), xv), yv))
        sums[r], maxima[r] = hsum16(xv), hmax16(xv)
    return fma_v, fma_s, added, biggest, sums, maxima


def test_vector_pieces_are_lanewise_fma_add_max_and_reduce16():
    rng = np.random.default_rng(5)
    x, y, z = (rng.standard_normal((3, 200, 16)) * 10.0 ** rng.uniform(-8, 8, (3, 200, 16))).astype(np.float32)
    x[7, 3] = y[8, 5] = np.nan                                   # NaN never wins a max
    x[9] = np.nan
    fma_v, fma_s, added, biggest, sums, maxima = _vector_ops(x, y, z, np.float32(0.3))
    np.testing.assert_array_equal(fma_v, fma_np(x, y, z))
    np.testing.assert_array_equal(fma_s, fma_np(np.float32(0.3), y, z))
    np.testing.assert_array_equal(added, x + y)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(biggest, np.fmax(np.fmax(np.float32(-np.inf), x), y))
    np.testing.assert_array_equal(sums, reduce16_np(x))
    np.testing.assert_array_equal(maxima[:9], np.nanmax(x[:9], axis=1))
    assert maxima[9] == -np.inf


@njit(cache=True)
def _halves(a, at, lanes):
    out = np.empty(16, np.float32)
    store16(out, 0, halves16(a, at, lanes))
    return out


@njit(cache=True)
def _rows(a, at, step):
    rows = rows4(a, at, step)
    out = np.empty((4, 16), np.float32)
    for j in range(4):
        store16(out, 16 * j, rows[j])
    return out


@njit(cache=True)
def _scalars(a, at, step, valid):
    x = floats4(a, at, step, valid)
    return np.array([x[0], x[1], x[2], x[3]], np.float32)


def test_loads_read_the_elements_they_name_and_nothing_past_what_is_valid():
    rng = np.random.default_rng(6)
    halves = rng.standard_normal(40).astype(np.float16)
    for lanes in (-3, 0, 1, 7, 15, 16, 99):
        want = np.zeros(16, np.float32)
        want[:max(0, min(16, lanes))] = halves[5:5 + max(0, min(16, lanes))]
        np.testing.assert_array_equal(_halves(halves.view(np.uint16), 5, lanes), want)
    tail = halves[-9:].copy()                                   # 9 halves: the other 7 lanes lie past the array
    np.testing.assert_array_equal(_halves(tail.view(np.uint16), 0, 9)[:9], tail.astype(np.float32))
    floats = rng.standard_normal(80).astype(np.float32)
    np.testing.assert_array_equal(_rows(floats, 3, 20), np.stack([floats[3 + 20 * j:19 + 20 * j] for j in range(4)]))
    floats = floats[:51].copy()                                 # a.flat[50] is the last one read
    for valid in range(5):
        np.testing.assert_array_equal(_scalars(floats, 2, 16, valid), [floats[2 + 16 * j] if j < valid else 0
                                                                        for j in range(4)])
