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


def test_top1_matches_llama_cpp_at_98_percent_of_positions(runs):
    agree = total = 0
    for case, (logits, _) in zip(PROMPTS, runs, strict=True):
        for pos, top10 in enumerate(case["top10"]):
            agree += int(np.argmax(logits[pos]) == top10[0][0])
            total += 1
    assert agree / total >= 0.98, f"{agree}/{total}"


def test_top10_sets_overlap(runs):
    for case, (logits, _) in zip(PROMPTS, runs, strict=True):
        for pos, top10 in enumerate(case["top10"]):
            ours = set(np.argsort(logits[pos])[-10:].tolist())
            assert len(ours & {t for t, _ in top10}) >= 7


def test_last_position_distribution_is_close(runs):
    for i, (logits, _) in enumerate(runs):
        ref = np.load(ORACLES / "smollm2-135m" / f"last_logits_{i}.npy")
        kl = _kl(ref, logits[-1])
        assert kl < 0.01, f"prompt {i}: KL {kl}"


def test_greedy_continuations_match_or_part_only_at_near_ties(runs):
    """16-token greedy prefixes equal llama.cpp's on 4 of 6 prompts; where they part, it is at a near-tie.

    llama.cpp disagrees with itself at exactly such points: with flash attention on, its own greedy output parts
    from this oracle (made with it off) within 16 tokens on 3 of the 6 prompts (see the notes in README).
    """
    matches = 0
    for case, (_, greedy) in zip(PROMPTS, runs, strict=True):
        n = min(16, len(case["greedy"]))
        matches += greedy[:n] == case["greedy"][:n]
    assert matches >= 4


def test_divergence_points_are_near_ties(smollm2):
    model = smollm2.model
    for case in PROMPTS:
        cache = model.new_cache(256)
        logits = model.forward(np.array(case["ids"]), 0, cache)
        cache.tokens.extend(case["ids"])
        for want in case["greedy"][:16]:
            ours = int(np.argmax(logits))
            if ours != want:
                assert logits[ours] - logits[want] < 0.75, (case["prompt"], ours, want)
                break
            logits = model.forward(np.array([want]), cache.length, cache)
            cache.tokens.append(want)


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
