"""Activation blocks (llama.cpp quantize_row_q8_0 / q8_1, AVX2 path): the Numba quantizer, its NumPy twin,
and the fp16 rounding of d and s."""

from __future__ import annotations

import numpy as np
import pytest

from engine.quant.activations import fp16_round, quantize_q8, quantize_q8_reference


def as_fp16(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):                                      # > 65519.99 -> inf, as intended
        return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


def test_fp16_round_matches_numpy_half_rounding(rng):
    bits = rng.integers(0, 2**31, 20000, dtype=np.uint32) | (rng.integers(0, 2, 20000, dtype=np.uint32) << 31)
    v = bits.view(np.float32)
    v = v[np.isfinite(v) & (np.abs(v) < 1e6) & (np.abs(v) > 1e-12)]
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)   # all finite >= 0
    ties = (halves[:-1] + halves[1:]) / 2                                   # exact midpoints: round to even
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, -70000.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26,
                      6.1e-5, -1e-7], dtype=np.float32)
    for values in (v, ties, -ties, edges):
        got = np.array([fp16_round(np.float32(a)) for a in values], dtype=np.float32)
        np.testing.assert_array_equal(got, as_fp16(values))


def test_numba_quantizer_equals_numpy_twin(rng):
    x = rng.standard_normal((7, 576)).astype(np.float32) * np.float32(10.0) ** rng.integers(-8, 4, (7, 1))
    x[0, :32] = 0.0                                                        # amax = 0 block
    x[1, 32:64] = 1e-30                                                   # d underflows to 0 in fp16
    x[2, 64:96] = np.linspace(-3.0, 3.0, 32)                              # exact ties after scaling
    got, want = quantize_q8(x), quantize_q8_reference(x)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_block_semantics_by_hand():
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [127.0, 2.5, -2.5, 3.5]                                    # amax 127: q = rint(x), ties even
    qy, d, s, isum = quantize_q8(x)
    np.testing.assert_array_equal(qy[0, :5], [127, 2, -2, 4, 0])
    assert d[0, 0] == 1.0 and isum[0, 0] == 131 and s[0, 0] == 131.0


def test_q8_1_sum_is_rounded_from_unrounded_d():
    x = np.full((1, 32), 0.3, np.float32)                                 # d = 0.3/127 is not an fp16 value
    _, d, s, isum = quantize_q8(x)
    d_exact = np.float32(0.3) / np.float32(127.0)
    assert isum[0, 0] == 32 * 127
    assert d[0, 0] == as_fp16(d_exact) != d_exact
    assert s[0, 0] == as_fp16(d_exact * np.float32(32 * 127))


@pytest.mark.parametrize("T, cols", [(1, 32), (3, 96), (9, 1536)])
def test_shapes(rng, T, cols):
    qy, d, s, isum = quantize_q8(rng.standard_normal((T, cols)).astype(np.float32))
    assert qy.shape == (T, cols) and d.shape == s.shape == isum.shape == (T, cols // 32)
    assert np.abs(qy).max() <= 127
