"""Q4_1 (SmolLM2's layer weights): the twin and kernels on real tensors (synthetic blocks: test_blocks32.py)."""

from __future__ import annotations

import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import _tiles, q4_1

TY = Q.Q4_1


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.29.attn_k.weight"])
def test_real_smollm2_tensors(qcheck, rng, smollm2_file, name):
    assert smollm2_file.tensors[name].ggml_type == TY
    raw = smollm2_file.raw(name)
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, raw.shape[1] // 20 * 32, rng))
    assert _tiles.nbytes(q4_1.repack(raw)) == raw.nbytes           # fp16 d and m kept as bits: the file's bytes


@pytest.mark.parametrize("rows", [16, 50, 96, 130])
@pytest.mark.parametrize("cols", [32, 1536])
@pytest.mark.parametrize("T", [1, 2, 7, 16])
def test_row_groups_cut_short_and_token_pairs(qcheck, rng, rows, cols, T):
    """vnni.rows_q4_1 takes 32 rows of a lone token or 16 rows of two tokens at a time, its loop over the nb
    blocks in IR (nb = 1 and 48 here): every cut of the last unit and an odd token out, bit for bit against
    ggml's float order (qcheck.kernel), and each token alone (matvec) equal to its row of the batch."""
    raw = qcheck.synthetic(TY, rows, cols, rng)["random_bytes"]
    qcheck.kernel(TY, raw, qcheck.activations(T, cols, rng))
