"""Q6_K keeps llama.cpp's float order: the kernel equals the NumPy twin of ggml's x86 vec_dot_q6_K_q8_K
(conftest ``ggml_order_q6k``) bit for bit on a real gemma3 ffn_down for every batch size 1..9 (synthetic blocks go
through the same check in test_formats.py), and that order is not one any other lane split would reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine import fpmath
from engine.quant import q6_k
from engine.quant.q8_k import quantize_q8k_reference

NAME = "blk.1.ffn_down.weight"  # (640, 2048) Q6_K


@pytest.fixture(scope="module")
def ffn_down(gemma3_gguf) -> tuple[np.ndarray, q6_k.Packed]:
    assert gemma3_gguf.tensors[NAME].ggml_type == Q.Q6_K
    raw = np.array(gemma3_gguf.raw(NAME))
    return raw, q6_k.repack(raw)


@pytest.mark.parametrize("T", range(1, 10))
def test_gemma3_ffn_down_bit_exact(kcheck, ffn_down, T):
    raw, packed = ffn_down
    x = kcheck.activations(T, 2048, np.random.default_rng(T))
    want, _ = kcheck.ggml_order[Q.Q6_K](raw, x)
    y = q6_k.matmul(packed, x)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(q6_k.matvec(packed, x[-1]), want[-1])


def test_per_element_offset_gives_other_bits(kcheck, ffn_down):
    """Lanes of sc·(q - 32)·yq (the -32 taken per element instead of per group pair) hold the same total but
    round differently: bit-exactness pins the lane split, not just the sum."""
    raw, packed = ffn_down
    x = kcheck.activations(9, 2048, np.random.default_rng(0))
    d, _, sc, _, q = kcheck.integer_parts(Q.Q6_K, raw)
    qy, dy, _ = quantize_q8k_reference(x)
    rows, nb = d.shape
    w = q * np.repeat(sc, 16, axis=-1)                                   # signed q: (rows, nb, 256)
    lanes = np.einsum("rbjli,nbjli->nrbl", w.reshape(rows, nb, 8, 8, 4),
                      qy.reshape(9, nb, 8, 8, 4).astype(np.int64)).astype(np.float32)
    acc = np.zeros((9, rows, 8), np.float32)
    for b in range(nb):
        acc = fpmath.fma_np((dy[:, None, b] * d[None, :, b]).astype(np.float32)[..., None], lanes[:, :, b], acc)
    other = fpmath.hsum8_np(acc)
    y = q6_k.matmul(packed, x)
    assert np.abs(other - y).max() < 1e-4 * np.abs(y).max()             # same sums ...
    assert (other != y).mean() > 0.1                                     # ... other roundings
