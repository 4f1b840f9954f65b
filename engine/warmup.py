"""Run every kernel path of a decoder once, right after loading, so that no request pays for compiling one.

Numba compiles a kernel on its first call (or loads it from the on-disk cache). Without this, the first request
that reaches a new path stalls while it compiles: a long prompt (threaded attention rows, Q4_K's groups of four,
Q6_K's tiled run of eight), the first step that decodes two sequences together, a lone token (the matvec path),
and the sampler's compiled steps (loading those from the cache took the first request ~0.1 s).
"""

from __future__ import annotations

import numpy as np

from engine.kv_cache import Segment
from engine.sampling_jit import greedy_penalized, top_k_penalized

PROMPT_TOKENS = 16     # ops_jit.PARALLEL_ROWS: long enough for every prefill path


def warm_up(model) -> bool:
    """Prefill, batched decoding and single-token decoding on scratch caches; False for models that do not
    decode (embedding encoders). Token ids are 0..PROMPT_TOKENS-1: any vocabulary has them."""
    if not hasattr(model, "forward_batch"):
        return False
    prompt = np.arange(PROMPT_TOKENS, dtype=np.int64) % model.cfg.vocab_size
    caches = [model.new_cache(PROMPT_TOKENS + 2) for _ in range(2)]
    model.forward_batch([Segment(prompt, 0, caches[0]), Segment(prompt[:2], 0, caches[1])])
    model.forward_batch([Segment(prompt[:1], PROMPT_TOKENS, caches[0]), Segment(prompt[:1], 2, caches[1])])
    logits = model.forward_batch([Segment(prompt[:1], 3, caches[1])])[0]                # (vocab,)
    greedy_penalized(logits, prompt[:2], 1.1, 0.0, 0.0)
    top_k_penalized(logits, prompt[:2], 1.1, 0.0, 0.0, 1)          # None (not compiled) for a tiny vocabulary
    return True
