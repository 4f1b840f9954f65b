"""Numba twins of engine.ops for the decode hot path: one compiled call where NumPy needs a dozen small ones.

At one token per step the arrays are tiny and NumPy's per-call overhead, not arithmetic, is what costs. Each function
here computes what its twin in engine.ops computes (tests/engine/test_ops_jit.py checks them against each other).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from engine.quant.activations import fp16_round


@njit(cache=True, nogil=True)
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Twin of ops.rms_norm: x (T, n) f32 -> (T, n) f32, sum of squares in float64."""
    T, n = x.shape
    out = np.empty_like(x)
    for t in range(T):
        total = 0.0
        for i in range(n):
            total += np.float64(x[t, i]) * np.float64(x[t, i])
        scale = np.float32(1.0 / np.sqrt(total / n + eps))
        for i in range(n):
            out[t, i] = (x[t, i] * scale) * weight[i]
    return out


@njit(cache=True, nogil=True)
def round_f16(x: np.ndarray) -> None:
    """Round a contiguous f32 array in place to the nearest fp16 values (round half to even), as
    ``x.astype(np.float16)`` would; bit arithmetic for the normal range, fp16_round for the rest."""
    flat = x.reshape(-1)
    bits = flat.view(np.uint32)
    for i in range(flat.size):
        mag = bits[i] & 0x7FFFFFFF
        if mag < 0x38800000 or mag >= 0x477FF000:         # below fp16's normal range, or rounds to inf / is NaN
            flat[i] = fp16_round(flat[i])
        else:                                               # drop 13 mantissa bits, ties to even
            bits[i] = (bits[i] & 0x80000000) | ((mag + 0xFFF + ((mag >> 13) & 1)) & 0xFFFFE000)


@njit(cache=True, nogil=True)
def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> None:
    """RoPE in place on x (heads, d): adjacent pairs (llama) or halves (neox)."""
    half = cos.shape[0]
    for h in range(x.shape[0]):
        for i in range(half):
            a, b = (i, i + half) if neox else (2 * i, 2 * i + 1)
            x0, x1 = x[h, a], x[h, b]
            x[h, a] = x0 * cos[i] - x1 * sin[i]
            x[h, b] = x0 * sin[i] + x1 * cos[i]


PARALLEL_ROWS = 16    # a prompt chunk at least this long spreads its query rows over the kernel threads


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray,
           start_pos: int, cos: np.ndarray, sin: np.ndarray, scale: float, window: int, neox: bool) -> np.ndarray:
    """T new tokens of one sequence: rotate q (T, n_head, d) and k (T, n_kv, d), store k/v at positions
    [start_pos, start_pos + T) of the layer's cache (K transposed: kt_cache (n_kv, d, capacity); v_cache
    (n_kv, capacity, d)) with f16 precision, and let each query
    attend causally (and within ``window`` if > 0) over the cache. Returns (T, n_head · d).

    Each position is computed by the same loops whatever T is, so a prompt read in one chunk, in several, or
    token by token gives bit-identical caches and logits: seeded sampling repeats even when a prefix comes from
    an earlier request's cache. The twin is ops.rope_* + KVCache.write + ops.attention.
    """
    q = _store(q, k, v, kt_cache, v_cache, start_pos, cos, sin, neox)
    out = np.zeros((q.shape[0], q.shape[1] * q.shape[2]), np.float32)
    rows = _attend_rows_parallel if q.shape[0] >= PARALLEL_ROWS else _attend_rows
    rows(q, kt_cache, v_cache, start_pos, scale, window, out)
    return out


@njit(cache=True, nogil=True)
def _store(q: np.ndarray, k: np.ndarray, v: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray, start_pos: int,
           cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """Rotate q and k, round q/k/v to f16, write k/v into the cache; returns the rotated, rounded q."""
    T = q.shape[0]
    q, k, v = q.copy(), k.copy(), v.copy()
    for t in range(T):
        _rotate(q[t], cos[t], sin[t], neox)
        _rotate(k[t], cos[t], sin[t], neox)
    round_f16(q)                                                # llama.cpp's K·Q runs in f16
    round_f16(k)                                                # its cache holds f16
    round_f16(v)
    for t in range(T):
        kt_cache[:, :, start_pos + t] = k[t]
        v_cache[:, start_pos + t, :] = v[t]
    return q


@njit(cache=True, nogil=True)
def _attend_rows(q, kt_cache, v_cache, start_pos, scale, window, out):
    for t in range(q.shape[0]):
        pos = start_pos + t
        first = max(0, pos - window + 1) if window > 0 else 0
        _attend_one(q[t], kt_cache, v_cache, first, pos + 1, scale, out[t])


@njit(cache=True, nogil=True, parallel=True)
def _attend_rows_parallel(q, kt_cache, v_cache, start_pos, scale, window, out):
    """_attend_rows with the rows shared among threads: each row's arithmetic is the same, so are its bits."""
    for t in prange(q.shape[0]):
        pos = start_pos + t
        first = max(0, pos - window + 1) if window > 0 else 0
        _attend_one(q[t], kt_cache, v_cache, first, pos + 1, scale, out[t])


@njit(cache=True, nogil=True)
def _attend_one(q: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray, first: int, end: int, scale: float,
                out: np.ndarray) -> None:
    """softmax(q·K[first:end] · scale) · V[first:end] for every head of one query; out (n_head · d,)."""
    n_head, d = q.shape
    group = n_head // kt_cache.shape[0]
    n = end - first
    scores = np.empty(n, np.float32)
    for h in range(n_head):
        kv = h // group
        keys_t = kt_cache[kv, :, first:end]                        # (d, n): positions contiguous
        scores[:] = 0.0
        for i in range(d):                  # positions in the vector lanes: each dot still sums in order of i
            qi = q[h, i]
            for s in range(n):
                scores[s] += qi * keys_t[i, s]
        best = -np.inf
        for s in range(n):
            scores[s] *= np.float32(scale)
            best = max(best, scores[s])
        total = np.float32(0.0)
        for s in range(end - first):
            scores[s] = np.exp(scores[s] - best)
            total += scores[s]
        for s in range(end - first):
            p = scores[s] / total
            for i in range(d):
                out[h * d + i] += p * v_cache[kv, first + s, i]
