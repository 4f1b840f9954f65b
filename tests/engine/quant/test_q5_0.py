"""Q5_0 (Gemma3's attn_q/k, ffn_gate/up): the twin and kernels on real tensors (synthetic blocks: test_blocks32.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import _tiles, q5_0

TY = Q.Q5_0


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.17.attn_k.weight"])
def test_real_gemma3_tensors(qcheck, rng, gemma3_file, name):
    assert gemma3_file.tensors[name].ggml_type == TY
    raw = gemma3_file.raw(name)
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, raw.shape[1] // 22 * 32, rng))
    assert _tiles.nbytes(q5_0.repack(raw)) == raw.nbytes           # 5.5 bits per weight, as in the file


def test_packed_fields_keep_the_file_bits(rng):
    """d is the file's fp16 bits; qh holds the file's 32 high bits, bit 4l + k moved to bit 8k + l."""
    raw = rng.integers(0, 256, (64, 2 * q5_0.BLOCK_BYTES), dtype=np.uint8)
    packed = q5_0.repack(raw)
    blocks = raw.reshape(64, 2, q5_0.BLOCK_BYTES)
    np.testing.assert_array_equal(packed.d[0].T, blocks[..., 0:2].copy().view("<u2")[..., 0])
    np.testing.assert_array_equal(packed.qs[0].transpose(2, 0, 1), blocks[..., 6:].copy().view("<u4"))
    qh = blocks[..., 2:6].copy().view("<u4")[..., 0].astype(np.int64)             # (64 rows, 2 blocks)
    for i in range(32):
        lane, k = divmod(i, 4)
        np.testing.assert_array_equal((packed.qh[0].T.astype(np.int64) >> (8 * k + lane)) & 1, (qh >> i) & 1)
