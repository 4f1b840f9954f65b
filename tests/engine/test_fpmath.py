"""engine.fpmath: ggml's float building blocks against their NumPy twins and against known values."""

from __future__ import annotations

import numpy as np
from numba import njit

from engine import fpmath


@njit(cache=False)
def _expf_all(x):
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = fpmath.expf(x[i])
    return out


@njit(cache=False)
def _fma_all(a, b, c):
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = fpmath.fma32(a[i], b[i], c[i])
    return out


@njit(cache=False)
def _reduce16(v):
    return fpmath.reduce16(v)


def test_expf_equals_twin_and_stays_within_two_ulp_of_exp():
    x = np.concatenate([np.linspace(-104, 89, 200001, dtype=np.float32),
                        np.array([0.0, -0.0, -np.inf, -200.0, 100.0], np.float32)])
    got = _expf_all(x)
    np.testing.assert_array_equal(got, fpmath.expf_np(x))
    assert got[-3] == 0.0 and got[-2] == 0.0 and got[-1] == np.inf and got[-5] == 1.0
    normal = (x > -80) & (x < 80)
    exact = np.exp(x[normal].astype(np.float64)).astype(np.float32)
    assert np.abs(got[normal].view(np.int32) - exact.view(np.int32)).max() <= 2


def test_fma_rounds_once():
    a = np.array([1 + 2.0**-12], np.float32)                            # a² = 1 + 2^-11 + 2^-24
    got = _fma_all(a, a, np.array([-1.0], np.float32))[0]
    assert got == np.float32(2.0**-11 + 2.0**-24)
    assert (a * a)[0] - np.float32(1.0) == np.float32(2.0**-11)          # rounding a*a first loses the 2^-24
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(10000).astype(np.float32) for _ in range(3))
    np.testing.assert_array_equal(_fma_all(a, b, c), fpmath.fma_np(a, b, c))


def test_reductions_follow_the_simd_trees():
    v = np.array([1e8, 1, -1e8, 1, 3, 0.5, 0.25, 7, 1e-3, 2, 4, 8, 16, 32, 64, -128], np.float32)
    want = np.float32(0)
    t = v[:8] + v[8:]                                            # halves, then quarters, then pairs
    s = t[4:] + t[:4]
    want = (s[0] + s[2]) + (s[1] + s[3])
    assert _reduce16(v) == want == fpmath.reduce16_np(v)
    lanes = np.arange(8, dtype=np.float32) * np.float32(0.1)
    assert fpmath.hsum8_np(lanes) == ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5])
                                                                                       + (lanes[3] + lanes[7]))


@njit
def _halves_to_floats(bits):
    out = np.empty(bits.size, np.float32)
    for i in range(bits.size):
        out[i] = fpmath.f16_to_f32(bits[i])
    return out


@njit
def _floats_to_halves(x):
    out = np.empty(x.size, np.uint16)
    for i in range(x.size):
        out[i] = fpmath.f32_to_f16(x[i])
    return out


def test_f16_conversions_match_numpy_on_every_half_and_on_rounding_cases():
    every_half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = every_half.view(np.float16).astype(np.float32)
    got = _halves_to_floats(every_half)
    numbers = ~np.isnan(want)                              # signalling NaNs come back quiet: still NaN
    np.testing.assert_array_equal(got[numbers].view(np.uint32), want[numbers].view(np.uint32))   # -0 included
    assert np.isnan(got[~numbers]).all()
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * 1000,
                        rng.standard_normal(20000).astype(np.float32) * 1e-6,      # subnormal halves
                        np.float32([65504, 65520, 1e9, -1e9, 0.0, -0.0, np.inf, -np.inf]),
                        (np.arange(2048, dtype=np.float32) + 0.5)])                # exact ties round to even
    np.testing.assert_array_equal(_floats_to_halves(x), x.astype(np.float16).view(np.uint16))
