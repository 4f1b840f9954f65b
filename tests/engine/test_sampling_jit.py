"""The compiled full-vocabulary steps against their NumPy twins: greedy(apply_penalties(...)) and top_k(...)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import sampling as S
from engine.sampling_jit import argmax, greedy_penalized, top_k_penalized, top_k_positions


def _twin(logits, history, repeat, presence, frequency, **newline):
    return S.greedy(S.apply_penalties(logits, history, repeat, presence, frequency, **newline))


@pytest.mark.parametrize("seed", range(40))
def test_same_token_as_the_numpy_chain_and_the_row_is_left_as_it_was(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 3000))
    logits = (rng.standard_normal(vocab) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
    logits[rng.integers(0, vocab, 5)] = logits.max()                     # ties: the lowest id wins
    logits[rng.integers(0, vocab, 3)] = 0.0
    history = rng.integers(0, min(vocab, int(rng.integers(1, 50))), int(rng.integers(0, 80)))   # repeats
    if rng.random() < 0.5:                                               # the current top tokens seen before
        history = np.concatenate([history, np.flatnonzero(logits == logits.max())[:2]])
    repeat = float(rng.choice([1.0, 1.1, 1.5, 0.8, 3.0]))
    presence, frequency = float(rng.choice([0.0, 0.5, -0.3])), float(rng.choice([0.0, 0.2, -0.4]))
    newline = {"newline_id": int(rng.integers(0, vocab)), "penalize_newline": bool(rng.random() < 0.5)}
    before = logits.copy()
    want = _twin(logits, history, repeat, presence, frequency, **newline)
    assert greedy_penalized(logits, history, repeat, presence, frequency, **newline) == want
    np.testing.assert_array_equal(logits, before)


def test_a_penalty_can_move_the_choice_to_another_token():
    logits = np.array([1.0, 3.0, 2.9, -1.0], np.float32)
    assert greedy_penalized(logits, np.array([1]), 1.0, 0.0, 0.0) == 1
    assert greedy_penalized(logits, np.array([1]), 1.1, 0.0, 0.0) == 2          # 3.0 / 1.1 < 2.9
    assert greedy_penalized(logits, np.array([1, 2]), 1.1, 0.0, 0.0) == 1       # 2.727 > 2.636
    assert greedy_penalized(logits, np.array([1, 1, 2]), 1.0, 0.0, 0.5) == 2    # 3 - 2·0.5 < 2.9 - 0.5
    assert greedy_penalized(logits, np.array([1]), 1.5, 0.0, 0.0, newline_id=1, penalize_newline=False) == 1


def test_read_only_rows_and_a_zero_penalty_work_like_numpy():
    logits = np.array([-2.0, 0.5, 0.4], np.float32)
    logits.flags.writeable = False
    assert greedy_penalized(logits, np.array([0, 1]), 1.2, 0.0, 0.0) == _twin(logits, np.array([0, 1]), 1.2, 0, 0)
    with np.errstate(divide="ignore"):
        assert greedy_penalized(logits, np.array([1]), 0.0, 0.0, 0.0) == _twin(logits, np.array([1]), 0.0, 0, 0)


@pytest.mark.parametrize("seed", range(60))
def test_argmax_is_numpys_first_maximum_with_nans_infinities_and_signed_zeros(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 15, 16, 17, 1023, 1024, 1025, 3000, 49152])) if seed < 40 else int(rng.integers(1, 5000))
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e4])).astype(np.float32)
    special = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, x.max()], int(rng.integers(0, 4)))
    x[rng.integers(0, n, special.size)] = special                      # maybe a NaN, ties, infinities
    if seed % 10 == 7:
        x[:] = rng.choice([-np.inf, -0.0, 0.0, np.nan])                 # a constant row: index 0
    assert argmax(x) == np.argmax(x)


def _top_k_twin(logits, history, repeat, presence, frequency, k, **newline):
    penalized = S.apply_penalties(logits, history, repeat, presence, frequency, **newline)
    return S.top_k(np.arange(logits.size), penalized, k)


@pytest.mark.parametrize("seed", range(80))
def test_penalized_top_k_equals_the_numpy_chain_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.choice([256 * 4, 3000, 4097, 49152, 262144 if seed % 10 == 0 else 5000]))
    logits = (rng.standard_normal(vocab) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
    if seed % 2:
        logits = np.round(logits * 2) / 2                                # many ties: lower ids first
    logits[rng.integers(0, vocab, 5)] = logits.max()
    logits[rng.integers(0, vocab, 3)] = rng.choice([0.0, -0.0, -np.inf])
    if seed % 7 == 3:
        logits[rng.integers(0, vocab, vocab - 10)] = -np.inf            # a constraint masked nearly everything
    history = rng.integers(0, vocab, int(rng.integers(0, 80)))
    if rng.random() < 0.5:
        history = np.concatenate([history, np.argsort(-logits, kind="stable")[:3]])    # the top tokens seen before
    k = min(int(rng.choice([1, 2, 40, 100, 4096])), vocab // 256)        # the largest k it takes on: vocab / 256
    args = (history, float(rng.choice([1.0, 1.1, 0.8])), float(rng.choice([0.0, 0.5])), float(rng.choice([0.0, -0.3])))
    newline = {"newline_id": int(rng.integers(0, vocab)), "penalize_newline": bool(rng.random() < 0.5)}
    before = logits.copy()
    ids, values = top_k_penalized(logits, *args, k, **newline)
    want_ids, want_values = _top_k_twin(logits, *args, k, **newline)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(values.view(np.uint32), want_values.view(np.uint32))   # -0.0 stays -0.0
    np.testing.assert_array_equal(logits, before)


def test_penalized_top_k_leaves_nans_large_k_and_small_vocabularies_to_numpy():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(49152).astype(np.float32)
    history = np.array([3, 3, 7])
    assert top_k_penalized(logits, history, 1.1, 0.0, 0.0, 4097) is None
    assert top_k_penalized(logits, history, 1.1, 0.0, 0.0, 0) is None
    assert top_k_penalized(logits[:1000], history, 1.1, 0.0, 0.0, 4) is None          # 4k > 1000 // 64
    for poison in ([np.nan], [np.inf, -np.inf]):
        row = logits.copy()
        row[[5, 49151][: len(poison)]] = poison
        assert top_k_penalized(row, history, 1.1, 0.0, 0.0, 40) is None
    read_only = logits.copy()
    read_only.flags.writeable = False
    ids, _ = top_k_penalized(read_only, history, 1.1, 0.0, 0.0, 40)
    np.testing.assert_array_equal(ids, _top_k_twin(logits, history, 1.1, 0.0, 0.0, 40)[0])


def test_top_k_positions_take_ties_in_position_order_and_scan_the_tail():
    x = np.zeros(64 * 8 + 5, np.float32)
    x[[300, 3, 70, 514]] = [2.0, 1.0, 1.0, 3.0]                         # 514: the tail past the last block
    assert top_k_positions(x, 2).tolist() == [514, 300]
    assert top_k_positions(x, 4).tolist() == [514, 300, 3, 70]
    assert top_k_positions(np.zeros(64 * 8, np.float32), 2).tolist() == [0, 1]
