"""engine.quant.gemm_groups and QTensor's per-token path flags: each sequence run of a forward call gets the paths
llama.cpp takes for it alone — GEMM4 (its repacked gemm, Q4_K) on the leading whole groups of four, TILED (its
tiled K-quant matmul, Q6_K) on every token of a run of >= 8 — and each format reads its own flag, so the Q4_K
results of a bool mask (the flags' former type) stay what they were."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import GEMM4, TILED, gemm_groups, load_tensor, q4_k

Q6K_NAME, Q4K_NAME = "blk.1.ffn_down.weight", "blk.2.ffn_down.weight"


def gemma3_weight(gguf_file, name: str, ty: Q):
    raw = np.array(gguf_file.raw(name))
    assert gguf_file.tensors[name].ggml_type == ty
    return raw, load_tensor(raw, ty, tuple(gguf_file.tensors[name].shape))


def test_flags_per_sequence_run():
    flags = gemm_groups([3, 6, 8, 9, 1])
    want = [0] * 3 + [GEMM4] * 4 + [0] * 2 + [GEMM4 | TILED] * 8 + [GEMM4 | TILED] * 8 + [TILED] + [0]
    assert flags.dtype == np.uint8 and flags.tolist() == want
    assert gemm_groups([]).shape == (0,)
    assert gemm_groups([7]).tolist() == [GEMM4] * 4 + [0] * 3                # 7 tokens: no tiled matmul


@pytest.fixture(scope="module")
def q6k(gemma3_gguf):
    return gemma3_weight(gemma3_gguf, Q6K_NAME, Q.Q6_K)


@pytest.mark.parametrize("lengths", [[5, 9, 8], [7, 1], [12]])
def test_q6k_paths_follow_the_runs(kcheck, q6k, lengths):
    raw, w = q6k
    x = kcheck.activations(sum(lengths), w.cols, np.random.default_rng(len(lengths)))
    flags = gemm_groups(lengths)
    want, _ = kcheck.ggml_order[Q.Q6_K](raw, x, (flags & TILED) != 0)
    np.testing.assert_array_equal(w(x, flags), want)


def test_q6k_without_flags_is_one_batch(kcheck, q6k):
    """No flags: llama.cpp's choice for one batch of T tokens (tiled from 8 on); one token takes vec_dot."""
    raw, w = q6k
    x = kcheck.activations(8, w.cols, np.random.default_rng(8))
    np.testing.assert_array_equal(w(x), kcheck.q6k_tiled(raw, x)[0])
    np.testing.assert_array_equal(w(x[:7]), kcheck.q6k_vec_dot(raw, x[:7])[0])
    np.testing.assert_array_equal(w(x[3]), kcheck.q6k_vec_dot(raw, x[3:4])[0][0])


def test_q4k_reads_only_its_flag(gemma3_gguf):
    """Q4_K under the flags == under the old bool mask == q4_k.matmul with the GEMM4 tokens (TILED ignored)."""
    _, w = gemma3_weight(gemma3_gguf, Q4K_NAME, Q.Q4_K)
    x = np.random.default_rng(3).standard_normal((15, w.cols)).astype(np.float32)
    flags = gemm_groups([6, 9])
    mask = (flags & GEMM4) != 0
    y = w(x, flags)
    np.testing.assert_array_equal(y, w(x, mask))
    np.testing.assert_array_equal(y, q4_k.matmul(w.packed, x, mask))
    assert (y != q4_k.matmul(w.packed, x, (flags & TILED) != 0)).any()      # the flag read makes a difference
