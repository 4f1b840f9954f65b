"""Activation blocks (llama.cpp quantize_row_q8_0 / q8_1, AVX2 path): the Numba quantizer, its NumPy twin,
serial and threaded."""

from __future__ import annotations

import numpy as np
import pytest

from engine.quant.activations import PARALLEL_TOKENS, quantize_q8, quantize_q8_reference


def as_fp16(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):                                      # > 65519.99 -> inf, as intended
        return np.asarray(v, dtype=np.float32).astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("tokens", [7, PARALLEL_TOKENS + 3])
def test_numba_quantizer_equals_numpy_twin(rng, tokens):
    x = rng.standard_normal((tokens, 576)).astype(np.float32) * np.float32(10.0) ** rng.integers(-8, 4, (tokens, 1))
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
