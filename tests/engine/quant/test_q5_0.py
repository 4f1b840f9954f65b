"""Q5_0 (Gemma3's attn_q/k, ffn_gate/up): NumPy twin and kernels against gguf-py and the integer path."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q5_0

TY = Q.Q5_0


def test_module_constants():
    assert (q5_0.TYPE, q5_0.BLOCK, q5_0.BLOCK_BYTES) == (TY, 32, 22)


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


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.17.attn_k.weight"])
def test_real_gemma3_tensors(qcheck, rng, gemma3_file, name):
    assert gemma3_file.tensors[name].ggml_type == TY
    raw = gemma3_file.raw(name)
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, raw.shape[1] // 22 * 32, rng))
