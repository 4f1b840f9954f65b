"""Numba twins of engine.ops for the decode hot path: one compiled call where NumPy needs a dozen small ones.

At one token per step the arrays are tiny and NumPy's per-call overhead, not arithmetic, is what costs. Each function
here computes what its twin in engine.ops computes (tests/engine/test_ops_jit.py checks them against each other).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.fpmath import expf, fma32, reduce16
from engine.quant.activations import fp16_round


@njit(cache=True, nogil=True)
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Twin of ops.rms_norm: x (T, n) f32 -> (T, n) f32, ggml's arithmetic (float32 squares, float64 sum)."""
    T, n = x.shape
    out = np.empty_like(x)
    for t in range(T):
        total = 0.0
        for i in range(n):
            total += np.float64(x[t, i] * x[t, i])
        scale = np.float32(1.0) / np.sqrt(np.float32(total / n) + np.float32(eps))
        for i in range(n):
            out[t, i] = (x[t, i] * scale) * weight[i]
    return out


@njit(cache=True, nogil=True)
def silu_mul(gate_up: np.ndarray, ffn_dim: int) -> np.ndarray:
    """Twin of ops.silu_mul: (T, 2·ffn_dim) gate | up -> (T, ffn_dim), ggml_vec_swiglu_f32's arithmetic."""
    T = gate_up.shape[0]
    out = np.empty((T, ffn_dim), np.float32)
    for t in range(T):
        for i in range(ffn_dim):
            g = gate_up[t, i]
            out[t, i] = (g / (np.float32(1.0) + expf(-g))) * gate_up[t, ffn_dim + i]
    return out


@njit(cache=True, nogil=True)
def rope_angles(size: int, n_rot: int, base: float, freq_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (size, n_rot/2) float32 for positions 0..size-1 as ggml_rope_cache_init makes them: theta starts at
    the position and is multiplied by powf(base, -2/n_rot) in float32 once per pair (math.cos of a float32 is
    libm's cosf here, as in ggml; NumPy's own float32 cos differs in the last bit)."""
    half = n_rot // 2
    cos = np.empty((size, half), np.float32)
    sin = np.empty((size, half), np.float32)
    theta_scale = np.float32(base) ** (np.float32(-2.0) / np.float32(n_rot))
    for p in range(size):
        theta = np.float32(p)
        for i in range(half):
            angle = np.float32(freq_scale) * theta
            cos[p, i], sin[p, i] = math.cos(angle), math.sin(angle)
            theta = theta * theta_scale
    return cos, sin


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
            x[h, a] = fma32(x0, cos[i], -(x1 * sin[i]))           # ggml's contraction of the two products
            x[h, b] = fma32(x0, sin[i], x1 * cos[i])


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
        _attend_one(q[t], kt_cache, v_cache, first, pos + 1, scale, out[t], q.shape[0] == 1)


@njit(cache=True, nogil=True, parallel=True)
def _attend_rows_parallel(q, kt_cache, v_cache, start_pos, scale, window, out):
    """_attend_rows with the rows shared among threads: each row's arithmetic is the same, so are its bits."""
    for t in prange(q.shape[0]):
        pos = start_pos + t
        first = max(0, pos - window + 1) if window > 0 else 0
        _attend_one(q[t], kt_cache, v_cache, first, pos + 1, scale, out[t], False)


@njit(cache=True, nogil=True)
def _attend_one(q: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray, first: int, end: int, scale: float,
                out: np.ndarray, decode: bool) -> None:
    """softmax(q·K[first:end] · scale) · V[first:end] for every head of one query; out (n_head · d,).

    The float order is llama.cpp's (flash attention off), so that logits match it bit for bit: K·Q and P·V are
    f16 × f16 matmuls, summed in the 16 float lanes of a __m512 — by ggml_vec_dot_f16 (4 accumulators, 64 values
    a step) when one token is evaluated (``decode``), by tinyBLAS (one accumulator) for a batch — then
    _mm512_reduce_add_ps; the softmax is ggml_vec_soft_max_f32 (ggml's expf, 16-lane chunk sums added in float64,
    times the float32 reciprocal) and the probabilities are rounded to f16 before P·V. Lane and chunk positions
    count from cache position 0, as in llama.cpp's KV cache.
    """
    n_head, d = q.shape
    group = n_head // kt_cache.shape[0]
    start = first // 16 * 16                                   # the first 16-position chunk that has a key
    probs = np.zeros(end - start, np.float32)                  # positions start..end-1, masked ones stay 0
    lanes = np.empty((4, 16, 64), np.float32)                  # (accumulator, lane, positions or dims)
    for h in range(n_head):
        kv = h // group
        _scores(q[h], kt_cache[kv], first, end, start, decode, lanes, probs)
        _softmax(probs, first - start, np.float32(scale))
        _weighted_values(probs, v_cache[kv], start, end, decode, lanes, out[h * d:(h + 1) * d])


@njit(cache=True, nogil=True, inline="always")
def _acc_index(i: int, decode: bool) -> int:
    """Which of ggml_vec_dot_f16's 4 accumulators sums element i (tinyBLAS keeps one)."""
    return (i // 16) % 4 if decode else 0


@njit(cache=True, nogil=True, inline="always")
def _lane(lanes: np.ndarray, m: int, c: int) -> np.float32:
    """Lane m of column c after GGML_F32x16_REDUCE's pairing (acc0 + acc2) + (acc1 + acc3); unused accumulators
    hold 0, so tinyBLAS's single accumulator comes through unchanged."""
    return (lanes[0, m, c] + lanes[2, m, c]) + (lanes[1, m, c] + lanes[3, m, c])


@njit(cache=True, nogil=True)
def _lane_sums(lanes: np.ndarray, n: int, out: np.ndarray) -> None:
    """out[c] = _mm512_reduce_add_ps of column c's 16 lanes, for c < n (the tree of fpmath.reduce16)."""
    for c in range(n):
        t0 = _lane(lanes, 0, c) + _lane(lanes, 8, c)
        t1 = _lane(lanes, 1, c) + _lane(lanes, 9, c)
        t2 = _lane(lanes, 2, c) + _lane(lanes, 10, c)
        t3 = _lane(lanes, 3, c) + _lane(lanes, 11, c)
        t4 = _lane(lanes, 4, c) + _lane(lanes, 12, c)
        t5 = _lane(lanes, 5, c) + _lane(lanes, 13, c)
        t6 = _lane(lanes, 6, c) + _lane(lanes, 14, c)
        t7 = _lane(lanes, 7, c) + _lane(lanes, 15, c)
        out[c] = ((t4 + t0) + (t6 + t2)) + ((t5 + t1) + (t7 + t3))


@njit(cache=True, nogil=True)
def _scores(qh, keys_t, first, end, start, decode, lanes, probs):
    """probs[s - start] = q·k_s for s in [first, end), 64 positions at a time in the vector lanes."""
    d = qh.shape[0]
    for s0 in range(first, end, 64):
        n = min(64, end - s0)
        lanes[:, :, :n] = 0.0
        for i in range(d):
            a, m, qi = _acc_index(i, decode), i % 16, qh[i]
            for c in range(n):
                lanes[a, m, c] = fma32(qi, keys_t[i, s0 + c], lanes[a, m, c])
        _lane_sums(lanes, n, probs[s0 - start:])


@njit(cache=True, nogil=True)
def _softmax(w: np.ndarray, skip: int, scale: np.float32) -> None:
    """In place over w[skip:] (w[:skip] are masked and stay 0): ggml_vec_soft_max_f32 after the scale."""
    best = -np.inf
    for s in range(skip, w.shape[0]):
        w[s] = w[s] * scale
        best = max(best, w[s])
    for s in range(skip, w.shape[0]):
        w[s] = expf(w[s] - best)
    total = 0.0
    chunk = np.zeros(16, np.float32)
    for c0 in range(0, w.shape[0], 16):                        # the tail chunk is padded with masked zeros
        n = min(16, w.shape[0] - c0)
        chunk[:n] = w[c0:c0 + n]
        chunk[n:] = 0.0
        total += np.float64(reduce16(chunk))
    inv = np.float32(1.0 / total)
    for s in range(skip, w.shape[0]):
        w[s] = w[s] * inv
    round_f16(w)                                               # the f16 operand of P·V


@njit(cache=True, nogil=True)
def _weighted_values(probs, values, start, end, decode, lanes, out):
    """out (d,) = Σ_s probs[s - start] · v_s, position s summed into lane s % 16 of accumulator _acc_index(s)."""
    d = out.shape[0]
    for i0 in range(0, d, 64):
        n = min(64, d - i0)
        lanes[:, :, :n] = 0.0
        for s in range(start, end):
            a, m, p = _acc_index(s, decode), s % 16, probs[s - start]
            for c in range(n):
                lanes[a, m, c] = fma32(p, values[s, i0 + c], lanes[a, m, c])
        _lane_sums(lanes, n, out[i0:])
