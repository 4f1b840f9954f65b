"""Q8_0 (tied embedding / output head): the twin and kernels on real tensors (synthetic blocks: test_blocks32.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import _tiles, q8_0

TY = Q.Q8_0


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
    assert _tiles.nbytes(q8_0.repack(raw[:448])) == raw[:448].nbytes  # fp16 d kept as bits: the file's bytes
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, 640, rng))
