"""The compiled greedy end of the chain against its NumPy twin, greedy(apply_penalties(...))."""

from __future__ import annotations

import numpy as np
import pytest

from engine import sampling as S
from engine.sampling_jit import argmax, greedy_penalized


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
