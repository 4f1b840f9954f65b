"""Q8_K activation quantizer (llama.cpp quantize_row_q8_K_ref): Numba == NumPy twin bit for bit, and both match
the reference algorithm on hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest

from engine.quant.q8_k import quantize_q8k, quantize_q8k_reference


def assert_same(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    got, want = quantize_q8k(x), quantize_q8k_reference(x)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    return got


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30, 3e-8])
def test_numba_equals_twin(rng, scale):
    x = (rng.standard_normal((5, 768)) * scale).astype(np.float32)
    x[1, 256:512] = 0.0                                                   # all-zero block: d = 0, q = 0
    x[2, :256] = np.round(x[2, :256] * 4 / scale) * scale / 4             # many exact .5 ties after scaling
    x[3, 5] = 1e3 * scale                                                 # positive max: d < 0
    x[4, 300], x[4, 301] = -7 * scale, 7 * scale                          # equal magnitudes: the first wins
    qy, d, bsums = assert_same(x)
    assert qy.shape == (5, 768) and d.shape == (5, 3) and bsums.shape == (5, 48)
    assert d[1, 1] == 0 and not qy[1, 256:512].any() and not bsums[1, 16:32].any()
    assert d[3, 0] < 0 and qy[3, 5] == -127
    assert qy[4, 300] == -127 and qy[4, 301] == 127 and d[4, 1] > 0              # max = -7: iscale > 0
    np.testing.assert_array_equal(bsums, qy.reshape(5, 48, 16).sum(-1))


def test_reconstruction_error_is_half_a_step(rng):
    x = rng.standard_normal((3, 512)).astype(np.float32)
    qy, d, _ = assert_same(x)
    xhat = qy.reshape(3, 2, 256) * d[..., None]                          # (T, nb, 256)
    amax = np.abs(x.reshape(3, 2, 256)).max(-1, keepdims=True)
    assert np.all(np.abs(xhat - x.reshape(3, 2, 256)) <= amax / 127 * (0.5 + 1e-5))


def test_hand_checked_block():
    x = np.zeros((1, 256), np.float32)
    x[0, :4] = [2.0, -1.0, 0.5, 0.0078125]                                # max = +2: iscale = -63.5
    qy, d, bsums = assert_same(x)
    # -63.5 * [2, -1, 0.5, 1/128] = [-127, 63.5, -31.75, -0.496] -> round half to even: 63.5 -> 64
    np.testing.assert_array_equal(qy[0, :4], [-127, 64, -32, 0])
    assert d[0, 0] == np.float32(1.0) / np.float32(-63.5)
    assert bsums[0, 0] == -127 + 64 - 32 and not bsums[0, 1:].any()
