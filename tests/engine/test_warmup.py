"""engine.warmup: after it, every kernel path a request can take is compiled, and nothing else changed."""

from __future__ import annotations

import numpy as np

from engine import ops_jit, sampling_jit
from engine.quant import q4_1, q8_0
from engine.warmup import warm_up


def test_warm_up_compiles_prefill_batched_and_single_token_paths(smollm2):
    model = smollm2.model
    assert warm_up(model) is True
    for kernel in (ops_jit._attend_rows, ops_jit._attend_rows_parallel, ops_jit._attend_decoding, q4_1._matmul,
                   q8_0._matmul, sampling_jit._greedy_penalized, sampling_jit._top_k_penalized):
        assert kernel.signatures, kernel.__name__
    ids = np.array(smollm2.tokenizer.encode("The sky is"))
    want = model.forward(ids, 0, model.new_cache(16))
    assert warm_up(model) is True                              # scratch caches: the model is untouched
    np.testing.assert_array_equal(model.forward(ids, 0, model.new_cache(16)), want)


def test_models_that_do_not_decode_are_skipped():
    class Encoder:                                              # an embedding model has no forward_batch
        def embed(self, batch):
            return batch

    assert warm_up(Encoder()) is False
