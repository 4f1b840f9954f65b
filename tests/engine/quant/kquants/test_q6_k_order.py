"""Q6_K keeps llama.cpp's float orders: under 8 tokens its x86 vec_dot_q6_K_q8_K (conftest ``ggml_order_q6k``), from
8 tokens on its tiled K-quant matmul (conftest ``ggml_tiled_q6k``), both bit for bit on a real gemma3 ffn_down for
batch sizes across the threshold and for any per-token mix of the two (synthetic blocks go through the same checks
in test_formats.py); and neither order is one that another lane split or product grouping would reproduce."""

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


@pytest.mark.parametrize("T", [*range(1, 12), 15, 16, 17, 33])
def test_gemma3_ffn_down_bit_exact(kcheck, ffn_down, T):
    """Default path choice (llama.cpp's for one batch of T): vec_dot's order under 8 tokens, the tiled one from 8."""
    raw, packed = ffn_down
    x = kcheck.activations(T, 2048, np.random.default_rng(T))
    vec, _ = kcheck.q6k_vec_dot(raw, x)
    tiled, _ = kcheck.q6k_tiled(raw, x)
    y = q6_k.matmul(packed, x)
    np.testing.assert_array_equal(y, tiled if T >= q6_k.TILED_MIN else vec)
    np.testing.assert_array_equal(q6_k.matvec(packed, x[-1]), vec[-1])      # one token: always vec_dot
    np.testing.assert_array_equal(q6_k.matmul(packed, x, np.zeros(T, np.bool_)), vec)
    np.testing.assert_array_equal(q6_k.matmul(packed, x, np.ones(T, np.bool_)), tiled)


def test_per_token_mix(kcheck, ffn_down):
    """Tokens of one call in different paths (sequences of different lengths batched together): each token gets
    its own path's bits, independent of its neighbours and of the 8-token micro-batches."""
    raw, packed = ffn_down
    x = kcheck.activations(21, 2048, np.random.default_rng(5))
    grouped = np.zeros(21, np.bool_)
    grouped[3:12] = grouped[17] = True
    want, _ = kcheck.ggml_order[Q.Q6_K](raw, x, grouped)
    np.testing.assert_array_equal(q6_k.matmul(packed, x, grouped), want)


def test_the_two_orders_differ(kcheck, ffn_down):
    """Same sums, other roundings: the switch at 8 tokens is visible in the bits (as in llama.cpp's outputs)."""
    raw, packed = ffn_down
    x = kcheck.activations(9, 2048, np.random.default_rng(1))
    vec = q6_k.matmul(packed, x, np.zeros(9, np.bool_))
    tiled = q6_k.matmul(packed, x, np.ones(9, np.bool_))
    assert np.abs(vec - tiled).max() < 1e-4 * np.abs(vec).max()
    assert (vec != tiled).mean() > 0.1


def test_tiled_product_grouping_is_pinned(kcheck, ffn_down):
    """The tiled kernel rounds float(isum) · d first and fuses the · dy into the accumulation; the other grouping
    fma(d · dy, float(isum), acc) (vec_dot's) holds the same sums but other bits."""
    raw, packed = ffn_down
    x = kcheck.activations(9, 2048, np.random.default_rng(2))
    d, _, sc, _, q = kcheck.integer_parts(Q.Q6_K, raw)
    qy, dy, _ = quantize_q8k_reference(x)
    rows, nb = d.shape
    isum = np.einsum("rbe,nbe->nrb", q * np.repeat(sc, 16, axis=-1), qy.reshape(9, nb, 256).astype(np.int64))
    acc = np.zeros((9, rows), np.float32)
    for b in range(nb):
        acc = fpmath.fma_np((dy[:, None, b] * d[None, :, b]).astype(np.float32), isum[:, :, b].astype(np.float32), acc)
    y = q6_k.matmul(packed, x, np.ones(9, np.bool_))
    assert np.abs(acc - y).max() < 1e-4 * np.abs(y).max()
    assert (acc != y).mean() > 0.05


def test_per_element_offset_gives_other_bits(kcheck, ffn_down):
    """Lanes of sc·(q - 32)·yq (the -32 taken per element instead of per group pair) hold the same total but
    round differently: bit-exactness pins vec_dot's lane split, not just the sum."""
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
    y = q6_k.matmul(packed, x, np.zeros(9, np.bool_))
    assert np.abs(other - y).max() < 1e-4 * np.abs(y).max()             # same sums ...
    assert (other != y).mean() > 0.1                                     # ... other roundings
