"""Q2_K..Q6_K: NumPy twins and Numba kernels against gguf-py and the integer path of llama.cpp's
vec_dot_q*_K_q8_K. Every format runs the same synthetic checks; Q4_K (gemma3's attn_output and half its
ffn_down) and Q6_K (the other half of ffn_down) also run on real gemma3 tensors and on the kernel's machine code.
Q2_K, Q3_K and Q5_K are used by no local model: synthetic blocks only."""

from __future__ import annotations

from types import ModuleType

import numba
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q2_k, q3_k, q4_k, q5_k, q6_k

# module -> (GGML type, ggml's sizeof(block_q*_K)), written out so the modules' own constants are checked
SPECS = {q2_k: (Q.Q2_K, 84), q3_k: (Q.Q3_K, 110), q4_k: (Q.Q4_K, 144), q5_k: (Q.Q5_K, 176), q6_k: (Q.Q6_K, 210)}
GEMMA3_TENSORS = [
    (q4_k, "blk.0.attn_output.weight"), (q4_k, "blk.2.ffn_down.weight"), (q4_k, "blk.17.attn_output.weight"),
    (q6_k, "blk.0.ffn_down.weight"), (q6_k, "blk.17.ffn_down.weight"),
]


def _name(mod: ModuleType) -> str:
    return mod.__name__.rsplit(".", 1)[-1].upper()


@pytest.fixture(params=list(SPECS), ids=_name)
def fmt(request) -> ModuleType:
    return request.param


@pytest.fixture
def ty(fmt) -> Q:
    return SPECS[fmt][0]


def test_module_constants(fmt, ty):
    assert (fmt.TYPE, fmt.BLOCK, fmt.BLOCK_BYTES) == (ty, 256, SPECS[fmt][1])


@pytest.mark.parametrize("extreme", [False, True])
def test_synthetic_blocks(kcheck, rng, ty, extreme):
    raw = kcheck.random_blocks(ty, 130, 768, rng, extreme)
    kcheck.twin(ty, raw)
    kcheck.take_rows(ty, raw, np.array([0, 129, 64, 63, 5, 5]))
    kcheck.kernel(ty, raw, kcheck.activations(5, 768, rng))


@pytest.mark.parametrize("rows, cols", [(1, 256), (7, 512), (64, 256), (65, 768), (130, 256)])
@pytest.mark.parametrize("T", range(1, 10))
def test_shapes_and_batch_sizes(kcheck, rng, ty, rows, cols, T):
    raw = kcheck.random_blocks(ty, rows, cols, rng)
    kcheck.kernel(ty, raw, kcheck.activations(T, cols, rng))


def test_concat_rows(kcheck, rng, ty):
    raws = [kcheck.random_blocks(ty, rows, 512, rng) for rows in (65, 7, 130)]  # rows not multiples of 64
    kcheck.concat(ty, raws, kcheck.activations(3, 512, rng))


def test_two_threads_give_the_same_bits(kcheck, rng, fmt, ty):
    packed = fmt.repack(kcheck.random_blocks(ty, 640, 512, rng))         # 10 tiles, split 5 / 5
    x = rng.standard_normal((9, 512)).astype(np.float32)                 # 9 tokens: Q6_K's tiled order too
    try:
        numba.set_num_threads(1)
        one = fmt.matmul(packed, x), fmt.matvec(packed, x[0])
        numba.set_num_threads(2)
        two = fmt.matmul(packed, x), fmt.matvec(packed, x[0])
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("mod, name", GEMMA3_TENSORS, ids=[f"{_name(m)}-{n}" for m, n in GEMMA3_TENSORS])
def test_real_gemma3_tensors(kcheck, rng, gemma3_gguf, mod, name):
    ty, block_bytes = SPECS[mod]
    assert gemma3_gguf.tensors[name].ggml_type == ty
    raw = gemma3_gguf.raw(name)
    kcheck.twin(ty, raw)
    kcheck.take_rows(ty, raw, rng.integers(0, raw.shape[0], 9))
    kcheck.kernel(ty, raw, kcheck.activations(3, raw.shape[1] // block_bytes * 256, rng))


@pytest.mark.parametrize("mod", [q4_k, q6_k], ids=_name)
def test_kernel_uses_vector_integer_multiply_adds(kcheck, rng, mod):
    ty = SPECS[mod][0]
    kcheck.vector_code(ty, kcheck.random_blocks(ty, 64, 256, rng))
