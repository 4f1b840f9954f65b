"""Q5_0 (Gemma3's attn_q/k, ffn_gate/up): the twin and kernels on real tensors (synthetic blocks: test_blocks32.py)."""

from __future__ import annotations

import pytest
from gguf.constants import GGMLQuantizationType as Q

TY = Q.Q5_0


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.17.attn_k.weight"])
def test_real_gemma3_tensors(qcheck, rng, gemma3_file, name):
    assert gemma3_file.tensors[name].ggml_type == TY
    raw = gemma3_file.raw(name)
    qcheck.twin(TY, raw)
    qcheck.take_rows(TY, raw, rng.integers(0, raw.shape[0], 9))
    qcheck.kernel(TY, raw, qcheck.activations(3, raw.shape[1] // 22 * 32, rng))
