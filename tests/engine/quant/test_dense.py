"""F32 / F16 / BF16 weights (widened to float32 at load, multiplied with BLAS): twins and products."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import FORMATS


def raw_bytes(ty: Q, w: np.ndarray) -> np.ndarray:
    """f32 (rows, cols) -> GGUF bytes uint8 (rows, row_bytes) of type ty."""
    data = {Q.F32: w.astype(np.float32), Q.F16: w.astype(np.float16)}.get(ty)
    data = gguf.quants.quantize(w, ty) if data is None else data
    return data.view(np.uint8).reshape(w.shape[0], -1)


@pytest.mark.parametrize("ty, size", [(Q.F32, 4), (Q.F16, 2), (Q.BF16, 2)])
def test_twin_kernels_and_rows(rng, ty, size):
    fmt = FORMATS[ty]
    assert (fmt.TYPE, fmt.BLOCK, fmt.BLOCK_BYTES) == (ty, 1, size)
    w = rng.standard_normal((67, 40)).astype(np.float32) * 3
    raw = raw_bytes(ty, w)
    want = gguf.quants.dequantize(raw, ty).reshape(67, 40)
    np.testing.assert_array_equal(fmt.dequantize(raw), want)
    packed = fmt.repack(raw)
    np.testing.assert_array_equal(fmt.take_rows(packed, np.array([66, 0, 3])), want[[66, 0, 3]])
    x = rng.standard_normal((5, 40)).astype(np.float32)
    exact = x.astype(np.float64) @ want.astype(np.float64).T
    np.testing.assert_allclose(fmt.matmul(packed, x), exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fmt.matvec(packed, x[2]), exact[2], rtol=1e-5, atol=1e-5)
    both = fmt.concat([packed, fmt.repack(raw[:5])])
    np.testing.assert_array_equal(fmt.take_rows(both, np.arange(72)), np.concatenate([want, want[:5]]))
