"""Q5_1: NumPy twin and Numba kernels against gguf-py and the integer path (no real tensor in our files)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q5_1

TY = Q.Q5_1


def test_module_constants():
    assert (q5_1.TYPE, q5_1.BLOCK, q5_1.BLOCK_BYTES) == (TY, 32, 24)


@pytest.mark.parametrize("case", ["normal", "extreme", "random_bytes"])
def test_synthetic_blocks(qcheck, rng, case):
    raw = qcheck.synthetic(TY, 130, 96, rng)[case]
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, np.array([0, 129, 64, 63, 5, 5]))
    qcheck.kernel(TY, raw, qcheck.activations(5, 96, rng))


@pytest.mark.parametrize("rows, cols", [(1, 32), (7, 64), (64, 32), (65, 576), (200, 160)])
@pytest.mark.parametrize("T", range(1, 10))
def test_shapes_and_batch_sizes(qcheck, rng, rows, cols, T):
    raw = qcheck.synthetic(TY, rows, cols, rng)["random_bytes"]
    qcheck.kernel(TY, raw, qcheck.activations(T, cols, rng))
