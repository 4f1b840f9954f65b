"""Q8_0 (tied embedding / output head): NumPy twin and kernels against gguf-py and the integer path."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import q8_0

TY = Q.Q8_0


def test_module_constants():
    assert (q8_0.TYPE, q8_0.BLOCK, q8_0.BLOCK_BYTES) == (TY, 32, 34)


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


def test_real_smollm2_token_embd(qcheck, rng, smollm2_file):
    assert smollm2_file.tensors["token_embd.weight"].ggml_type == TY
    raw = smollm2_file.raw("token_embd.weight")                            # (49152, 612)
    part = raw[np.sort(rng.choice(raw.shape[0], 700, replace=False))]
    qcheck.twin(TY, part)
    qcheck.take_rows(TY, raw[:300], rng.integers(0, 300, 9))
    qcheck.kernel(TY, part, qcheck.activations(3, 576, rng))


@pytest.mark.parametrize("name", ["blk.0.attn_v.weight", "token_embd.weight"])
def test_real_gemma3_tensors(qcheck, rng, gemma3_file, name):
    assert gemma3_file.tensors[name].ggml_type == TY
    raw = gemma3_file.raw(name)[:500]
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, 640, rng))
