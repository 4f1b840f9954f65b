"""Q2_K: NumPy twin and Numba kernels against gguf-py and the integer path of llama.cpp's
vec_dot_q2_K_q8_K (no local model uses it: synthetic blocks only)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q2_k

TY = Q.Q2_K


def test_module_constants():
    assert (q2_k.TYPE, q2_k.BLOCK, q2_k.BLOCK_BYTES) == (TY, 256, 84)


@pytest.mark.parametrize("extreme", [False, True])
def test_synthetic_blocks(kcheck, rng, extreme):
    raw = kcheck.random_blocks(TY, 130, 768, rng, extreme)
    kcheck.twin(TY, raw)
    kcheck.take_rows(TY, raw, np.array([0, 129, 64, 63, 5, 5]))
    kcheck.kernel(TY, raw, kcheck.activations(5, 768, rng))


@pytest.mark.parametrize("rows, cols", [(1, 256), (7, 512), (64, 256), (65, 768), (130, 256)])
@pytest.mark.parametrize("T", range(1, 10))
def test_shapes_and_batch_sizes(kcheck, rng, rows, cols, T):
    raw = kcheck.random_blocks(TY, rows, cols, rng)
    kcheck.kernel(TY, raw, kcheck.activations(T, cols, rng))


def test_concat_rows(kcheck, rng):
    raws = [kcheck.random_blocks(TY, rows, 512, rng) for rows in (65, 7, 130)]  # rows not multiples of 64
    kcheck.concat(TY, raws, kcheck.activations(3, 512, rng))


def test_two_threads_give_the_same_bits(kcheck, rng):
    packed = q2_k.repack(kcheck.random_blocks(TY, 640, 512, rng))         # 10 tiles, split 5 / 5
    x = rng.standard_normal((6, 512)).astype(np.float32)
    try:
        numba.set_num_threads(1)
        one = q2_k.matmul(packed, x), q2_k.matvec(packed, x[0])
        numba.set_num_threads(2)
        two = q2_k.matmul(packed, x), q2_k.matvec(packed, x[0])
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])

