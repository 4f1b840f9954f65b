"""Numba twin of the greedy end of the sampler chain: ``greedy(apply_penalties(...))`` in one compiled call.

A greedy request with Ollama's default repeat penalty would otherwise run a dozen NumPy calls a token (np.unique, a
copy of the whole row, fancy indexing), and right after a forward pass, whose weights have swept the caches, each of
those costs several times what it does in a warm loop (~0.13 ms a token measured, against a 7.6 ms forward pass).
Here the history's distinct tokens are counted from a sorted copy, their penalized logits are swapped into the row
for one argmax and swapped back: no full-row copy. tests/engine/test_sampling_jit.py checks it against the twin.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.fpmath import add16, hmax16, hsum16, load16, max16, splat16


def greedy_penalized(logits: np.ndarray, history: np.ndarray, repeat_penalty: float, presence_penalty: float,
                     frequency_penalty: float, *, newline_id: int | None = None, penalize_newline: bool = True) -> int:
    """``sampling.greedy(sampling.apply_penalties(logits, history, ...))``, the same id for the same arguments.

    logits: f32 (vocab,), left as it was (a read-only or strided row is copied first); history: int (h,) ids."""
    row = logits if logits.flags.writeable and logits.flags.c_contiguous else np.array(logits, np.float32)
    keep = newline_id if newline_id is not None and not penalize_newline else -1
    return int(_greedy_penalized(row, np.asarray(history, np.int64), np.float32(repeat_penalty),
                                 np.float32(presence_penalty), np.float32(frequency_penalty), keep))


@njit(cache=True, nogil=True, error_model="numpy")     # a penalty of 0 divides as NumPy does (inf), not raise
def _greedy_penalized(logits, history, repeat, presence, frequency, keep):
    """logits f32 (vocab,) (restored before returning), history i64 (h,); ``keep``: an id whose logit is not
    penalized (-1: none). The float32 arithmetic of apply_penalties: l * r if l <= 0 else l / r, then minus
    (count · frequency + presence)."""
    tokens = np.sort(history)                                              # (h,) equal ids side by side
    ids = np.empty(tokens.size, np.int64)
    values = np.empty(tokens.size, np.float32)
    n = 0
    start = 0
    while start < tokens.size:
        token, end = tokens[start], start + 1
        while end < tokens.size and tokens[end] == token:
            end += 1
        logit = logits[token]
        value = logit * repeat if logit <= 0 else logit / repeat
        value -= np.float32(end - start) * frequency + presence
        ids[n], values[n] = token, (logit if token == keep else value)
        n += 1
        start = end
    for i in range(n):                                                     # swap the penalized values in
        values[i], logits[ids[i]] = logits[ids[i]], values[i]
    best = argmax(logits)
    for i in range(n):                                                     # and the originals back
        logits[ids[i]] = values[i]
    return best


@njit(cache=True, nogil=True)
def argmax(x):
    """np.argmax of a C-contiguous float32 row (the first maximum; the first NaN if there is one), with 16-lane
    vector maxima per block of 1024 floats, then the first maximum looked for in its block: Numba's np.argmax is a
    scalar loop, 35 µs for a 49152-token vocabulary, this ~4. (The block size is a literal: Numba's disk cache is
    keyed on a kernel's source, not on the globals it reads.)"""
    whole = x.size - x.size % 16
    sums = splat16(np.float32(0))                                        # NaN in any lane once x holds a NaN
    best, best_at = np.float32(-np.inf), 0                                # the largest block maximum, its block
    for start in range(0, whole, 1024):
        lanes = splat16(np.float32(-np.inf))
        for i in range(start, min(start + 1024, whole), 16):
            v = load16(x, i)
            lanes, sums = max16(lanes, v), add16(sums, v)
        block = hmax16(lanes)
        if block > best:
            best, best_at = block, start
    tail_nan = False
    for i in range(whole, x.size):
        tail_nan |= x[i] != x[i]
        if x[i] > best:
            best, best_at = x[i], i
    if tail_nan or hsum16(sums) != hsum16(sums):                         # NaN (or inf - inf): the scalar rule
        return np.argmax(x)
    while x[best_at] != best:
        best_at += 1
    return best_at
