"""SmolLM2-135M (llama) against llama.cpp's reference logits and greedy continuations."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ORACLES, oracle

PROMPTS = oracle("smollm2-135m", "logits.json")


@pytest.fixture(scope="module")
def runs(smollm2):
    """Per prompt: all-position logits of the prompt and our greedy continuation."""
    model, eog = smollm2.model, smollm2.tokenizer.eog_ids
    out = []
    for case in PROMPTS:
        cache = model.new_cache(256)
        logits = model.forward(np.array(case["ids"]), 0, cache, all_logits=True)   # (T, vocab)
        cache.tokens.extend(case["ids"])
        greedy, last = [], logits[-1]
        for _ in range(len(case["greedy"])):
            token = int(np.argmax(last))
            greedy.append(token)
            if token in eog:
                break
            last = model.forward(np.array([token]), cache.length, cache)
            cache.tokens.append(token)
        out.append((logits, greedy))
    return out


def test_logits_equal_llama_cpp_bit_for_bit_at_every_position(runs):
    """Same file, same arithmetic order as llama.cpp's x86 CPU kernels: the top-10 logits of every prompt position
    and the whole last-position vector are llama.cpp's float32 values exactly."""
    for i, (case, (logits, _)) in enumerate(zip(PROMPTS, runs, strict=True)):
        for pos, top10 in enumerate(case["top10"]):
            ids = [t for t, _ in top10]
            np.testing.assert_array_equal(logits[pos, ids], np.array([v for _, v in top10], np.float32))
            assert int(np.argmax(logits[pos])) == ids[0]
        np.testing.assert_array_equal(logits[-1], np.load(ORACLES / "smollm2-135m" / f"last_logits_{i}.npy"))


def test_greedy_continuations_equal_llama_cpp_to_the_end(runs):
    """Every oracle continuation (up to 32 tokens, or to EOS) token for token: the decode path (one token a step,
    ggml_vec_dot_f16's attention order) is llama.cpp's too."""
    for case, (_, greedy) in zip(PROMPTS, runs, strict=True):
        assert greedy == case["greedy"], case["prompt"]


def test_decode_one_at_a_time_matches_batched_prefill(smollm2):
    model = smollm2.model
    ids = PROMPTS[3]["ids"]
    batched = model.forward(np.array(ids), 0, model.new_cache(64))
    cache = model.new_cache(64)
    for pos, token in enumerate(ids):
        stepwise = model.forward(np.array([token]), pos, cache)
    # the two paths sum attention in different orders; 8-bit activation rounding turns such ulps into small
    # logit changes (llama.cpp's batch and decode paths differ the same way), so compare distributions
    assert np.argmax(stepwise) == np.argmax(batched)
    assert _kl(batched, stepwise) < 2e-3


def test_context_shift_rerotation_equals_keys_at_shifted_positions(smollm2):
    model = smollm2.model
    ids = np.array(PROMPTS[4]["ids"] + PROMPTS[5]["ids"])
    shifted = model.new_cache(64)
    model.forward(ids, 7, shifted)                   # keys computed at positions 7..
    model.rerotate_keys(shifted, 7, 7 + len(ids), -5)  # ... moved to 2..
    direct = model.new_cache(64)
    model.forward(ids, 2, direct)
    # layer 0's keys depend only on the token and its position (deeper layers also see the zeroed prefix)
    np.testing.assert_allclose(shifted.k[0, :, 7:7 + len(ids)], direct.k[0, :, 2:2 + len(ids)], rtol=2e-3, atol=4e-3)


def _kl(ref, ours):
    p, q = _softmax(ref), _softmax(ours)
    return float(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12))))


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_batched_segments_equal_separate_forwards(smollm2):
    """Sequences computed together (one prefill chunk + decodes) give each the logits it gets alone."""
    from engine.kv_cache import Segment

    model = smollm2.model
    prompts = [PROMPTS[1]["ids"], PROMPTS[3]["ids"], PROMPTS[5]["ids"]]
    alone = [model.forward(np.array(p), 0, model.new_cache(64)) for p in prompts]
    caches = [model.new_cache(64) for _ in prompts]
    model.forward(np.array(prompts[0][:-1]), 0, caches[0])      # sequence 0 is decoding its last prompt token
    model.forward(np.array(prompts[1][:-1]), 0, caches[1])      # sequence 1 too
    together = model.forward_batch([
        Segment(np.array(prompts[0][-1:]), len(prompts[0]) - 1, caches[0]),
        Segment(np.array(prompts[1][-1:]), len(prompts[1]) - 1, caches[1]),
        Segment(np.array(prompts[2]), 0, caches[2]),               # sequence 2 reads its whole prompt
    ])
    for got, want in zip(together, alone, strict=True):
        assert np.argmax(got) == np.argmax(want) and _kl(want, got) < 2e-3


def test_decoding_step_of_several_sequences_equals_each_alone_bit_for_bit(smollm2):
    """One token per sequence (the continuous-batching step, one attention call for all) gives every sequence the
    logits and cache entries it gets decoding alone, at different cache lengths."""
    from engine.kv_cache import Segment

    model = smollm2.model
    prompts = [PROMPTS[1]["ids"], PROMPTS[3]["ids"], PROMPTS[5]["ids"]]
    alone, together = [model.new_cache(64) for _ in prompts], [model.new_cache(64) for _ in prompts]
    for p, a, t in zip(prompts, alone, together, strict=True):
        model.forward(np.array(p[:-1]), 0, a)
        model.forward(np.array(p[:-1]), 0, t)
    want = [model.forward(np.array(p[-1:]), len(p) - 1, a) for p, a in zip(prompts, alone, strict=True)]
    got = model.forward_batch([Segment(np.array(p[-1:]), len(p) - 1, t) for p, t in zip(prompts, together,
                                                                                           strict=True)])
    np.testing.assert_array_equal(got, np.stack(want))
    for p, a, t in zip(prompts, alone, together, strict=True):
        np.testing.assert_array_equal(t.kt[:, :, :, :len(p)], a.kt[:, :, :, :len(p)])
        np.testing.assert_array_equal(t.v[:, :, :len(p)], a.v[:, :, :len(p)])
