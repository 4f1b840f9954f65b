"""The 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): NumPy twins and Numba kernels against gguf-py and
the integer path, on synthetic blocks of every shape. Real tensors are checked in test_<format>.py."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q4_0, q4_1, q5_0, q5_1, q8_0

SPECS = {q4_0: (Q.Q4_0, 18), q4_1: (Q.Q4_1, 20), q5_0: (Q.Q5_0, 22), q5_1: (Q.Q5_1, 24), q8_0: (Q.Q8_0, 34)}


@pytest.fixture(params=list(SPECS), ids=lambda m: SPECS[m][0].name)
def fmt(request):
    return request.param


def test_module_constants(fmt):
    ty, block_bytes = SPECS[fmt]
    assert (fmt.TYPE, fmt.BLOCK, fmt.BLOCK_BYTES) == (ty, 32, block_bytes)


@pytest.mark.parametrize("case", ["normal", "extreme", "random_bytes"])
def test_synthetic_blocks(qcheck, rng, fmt, case):
    ty = SPECS[fmt][0]
    raw = qcheck.synthetic(ty, 130, 96, rng)[case]
    qcheck.twin(ty, raw)
    qcheck.take_rows(ty, raw, np.array([0, 129, 64, 63, 5, 5]))
    qcheck.kernel(ty, raw, qcheck.activations(5, 96, rng))


@pytest.mark.parametrize("rows, cols", [(1, 32), (7, 64), (64, 32), (65, 576), (200, 160)])
@pytest.mark.parametrize("T", range(1, 10))
def test_shapes_and_batch_sizes(qcheck, rng, fmt, rows, cols, T):
    ty = SPECS[fmt][0]
    raw = qcheck.synthetic(ty, rows, cols, rng)["random_bytes"]
    qcheck.kernel(ty, raw, qcheck.activations(T, cols, rng))
