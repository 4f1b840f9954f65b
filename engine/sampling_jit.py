"""Numba twins of the sampler chain's full-vocabulary steps: ``greedy(apply_penalties(...))`` and
``top_k(ids, apply_penalties(...), k)``, each in one compiled call.

A greedy request with Ollama's default repeat penalty would otherwise run a dozen NumPy calls a token (np.unique, a
copy of the whole row, fancy indexing), and right after a forward pass, whose weights have swept the caches, each of
those costs several times what it does in a warm loop (~0.13 ms a token measured, against a 7.6 ms forward pass).
Here the history's distinct tokens are counted from a sorted copy, their penalized logits are swapped into the row
for one argmax (or top-k selection) and swapped back: no full-row copy. Ollama's default sampling (temperature 0.8,
top_k 40, repeat penalty 1.1) spent ~140 µs a token in apply_penalties and top_k for a 49152-token vocabulary and
~270 µs for 262144. tests/engine/test_sampling_jit.py checks both against the NumPy chain.
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


def top_k_penalized(logits: np.ndarray, history: np.ndarray, repeat_penalty: float, presence_penalty: float,
                    frequency_penalty: float, k: int, *, newline_id: int | None = None,
                    penalize_newline: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """``sampling.top_k(arange(vocab), sampling.apply_penalties(logits, history, ...), k)``: the same (ids, logits),
    sorted by logit descending, ties by id. None where the NumPy chain decides: k > 4096, k > vocab / 256 (too few
    64-float blocks to bound the k-th largest), or a row holding NaN (or both infinities).

    logits: f32 (vocab,), left as it was; history: int (h,) ids."""
    if not 1 <= k <= 4096 or 4 * k > logits.size // 64:
        return None
    row = logits if logits.flags.writeable and logits.flags.c_contiguous else np.array(logits, np.float32)
    keep = newline_id if newline_id is not None and not penalize_newline else -1
    ids, values = _top_k_penalized(row, np.asarray(history, np.int64), np.float32(repeat_penalty),
                                   np.float32(presence_penalty), np.float32(frequency_penalty), keep, k)
    return (ids, values) if ids.size else None


@njit(cache=True, nogil=True, error_model="numpy")     # a penalty of 0 divides as NumPy does (inf), not raise
def _greedy_penalized(logits, history, repeat, presence, frequency, keep):
    """logits f32 (vocab,) (restored before returning), history i64 (h,); ``keep``: an id whose logit is not
    penalized (-1: none)."""
    ids, values = _penalize(logits, history, repeat, presence, frequency, keep)
    best = argmax(logits)
    _restore(logits, ids, values)
    return best


@njit(cache=True, nogil=True, error_model="numpy")
def _top_k_penalized(logits, history, repeat, presence, frequency, keep, k):
    """(ids, penalized logits) of the k best, as top_k_penalized; both empty when the row holds a NaN."""
    ids, values = _penalize(logits, history, repeat, presence, frequency, keep)
    best = top_k_positions(logits, k)
    chosen = logits[best]                                                  # (k,) a copy, penalized
    _restore(logits, ids, values)
    return best, chosen


@njit(cache=True, nogil=True, error_model="numpy")
def _penalize(logits, history, repeat, presence, frequency, keep):
    """Swap the penalized logits of the history's distinct tokens into the row; returns (ids, original logits) for
    _restore. The float32 arithmetic of apply_penalties: l * r if l <= 0 else l / r, then minus
    (count · frequency + presence); ``keep``'s logit stays as it was."""
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
    for i in range(n):
        values[i], logits[ids[i]] = logits[ids[i]], values[i]
    return ids[:n], values[:n]


@njit(cache=True, nogil=True)
def _restore(logits, ids, values):
    for i in range(ids.size):
        logits[ids[i]] = values[i]


@njit(cache=True, nogil=True)
def top_k_positions(x, k):
    """Positions of the k largest of x (f32 (n,), 4k <= n // 64), by value descending, ties by position: the first
    k of a stable descending sort. Empty when x holds a NaN (or +inf and -inf).

    The k-th largest of the 64-float blocks' maxima bounds the k-th largest value from below (k blocks each hold a
    value that large), so only the blocks whose maximum reaches it are scanned for survivors, and only those sorted.
    """
    n_blocks = x.size // 64
    maxima = np.empty(n_blocks, np.float32)
    sums = splat16(np.float32(0))                                        # NaN in any lane once x holds a NaN
    for b in range(n_blocks):
        lanes = splat16(np.float32(-np.inf))
        for i in range(64 * b, 64 * b + 64, 16):
            v = load16(x, i)
            lanes, sums = max16(lanes, v), add16(sums, v)
        maxima[b] = hmax16(lanes)
    tail_nan = False
    for i in range(64 * n_blocks, x.size):
        tail_nan |= x[i] != x[i]
    if tail_nan or hsum16(sums) != hsum16(sums):
        return np.empty(0, np.int64)
    bound = np.partition(maxima, n_blocks - k)[n_blocks - k]
    found = np.empty(_reaching(x, maxima, bound, np.empty(0, np.int64)), np.int64)
    _reaching(x, maxima, bound, found)
    order = np.argsort(-x[found], kind="mergesort")[:k]                  # stable: equal values keep position order
    return found[order]


@njit(cache=True, nogil=True)
def _reaching(x, maxima, bound, out):
    """How many positions hold x >= bound, looking only in the blocks whose maximum reaches it and in the tail past
    the last whole block; out receives them in ascending order when it has room."""
    count = 0
    for b in range(maxima.size + 1):
        start, stop = 64 * b, (64 * b + 64 if b < maxima.size else x.size)
        if b < maxima.size and maxima[b] < bound:
            continue
        for i in range(start, stop):
            if x[i] >= bound:
                if count < out.size:
                    out[count] = i
                count += 1
    return count


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
