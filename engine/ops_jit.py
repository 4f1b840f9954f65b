"""Numba twins of engine.ops for the decode hot path: one compiled call where NumPy needs a dozen small ones.

At one token per step the arrays are tiny and NumPy's per-call overhead, not arithmetic, is what costs. Each function
here computes what its twin in engine.ops computes (tests/engine/test_ops_jit.py checks them against each other).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.fpmath import expf, f16_to_f32, f32_bits, f32_to_f16, fma32, reduce16
from engine.kv_cache import SegmentBatch, segment_rows


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


def silu_mul(gate_up: np.ndarray, ffn_dim: int) -> np.ndarray:
    """Twin of ops.silu_mul: (T, 2·ffn_dim) gate | up -> (T, ffn_dim), ggml_vec_swiglu_f32's arithmetic; several
    tokens (a decoding batch, a prompt) are shared among the kernel threads, one token runs serially."""
    out = np.empty((gate_up.shape[0], ffn_dim), np.float32)
    (_silu_mul_parallel if gate_up.shape[0] > 1 else _silu_mul_serial)(gate_up, ffn_dim, out)
    return out


@njit(cache=True, nogil=True, inline="always")
def _silu_mul_row(gate_up, ffn_dim, out):
    for i in range(ffn_dim):
        g = gate_up[i]
        out[i] = (g / (np.float32(1.0) + expf(-g))) * gate_up[ffn_dim + i]


@njit(cache=True, nogil=True)
def _silu_mul_serial(gate_up, ffn_dim, out):
    for t in range(gate_up.shape[0]):
        _silu_mul_row(gate_up[t], ffn_dim, out[t])


@njit(cache=True, nogil=True, parallel=True)
def _silu_mul_parallel(gate_up, ffn_dim, out):
    for t in prange(gate_up.shape[0]):
        _silu_mul_row(gate_up[t], ffn_dim, out[t])


@njit(cache=True, nogil=True)
def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """ggml_gelu_f32 elementwise: 0.5 x (1 + tanhf(sqrt(2/pi) x (1 + 0.044715 x²))), with GCC's contraction of
    the inner 1 + (0.044715 x) x into a fused multiply-add (libm's tanhf, as in ggml). Twin: ops.gelu_tanh."""
    out = np.empty_like(x)
    for i in range(x.size):
        v = x.flat[i]
        inner = (np.float32(0.7978845608028654) * v) * fma32(np.float32(0.044715) * v, v, np.float32(1.0))
        out.flat[i] = np.float32(0.5) * v * (np.float32(1.0) + math.tanh(inner))
    return out


@njit(cache=True, nogil=True)
def geglu(gate_up: np.ndarray, ffn_dim: int, table: np.ndarray) -> np.ndarray:
    """ggml_vec_geglu_f32 with GGML_GELU_FP16: (T, 2·ffn_dim) gate | up -> (T, ffn_dim), gelu(gate) read from
    ``table`` (65536,) at gate's fp16 bits, 0 for gate <= -10, gate itself for gate >= 10; times up."""
    T = gate_up.shape[0]
    out = np.empty((T, ffn_dim), np.float32)
    for t in range(T):
        for i in range(ffn_dim):
            g = gate_up[t, i]
            if g <= -10.0:
                gelu = np.float32(0.0)
            elif g >= 10.0:
                gelu = g
            else:
                gelu = table[_f16_bits(g)]
            out[t, i] = gelu * gate_up[t, ffn_dim + i]
    return out


@njit(cache=True, nogil=True, inline="always")
def _f16_bits(x: np.float32) -> int:
    """The fp16 bit pattern nearest to x (round half to even), for |x| < 65504."""
    bits = np.int64(f32_bits(x))
    sign, mag = (bits >> 16) & 0x8000, bits & 0x7FFFFFFF
    if mag < 0x38800000:                                    # fp16 subnormal (or zero): steps of 2**-24
        return sign | int(np.rint(abs(np.float64(x)) * 2.0**24))
    return sign | (((mag + 0xFFF + ((mag >> 13) & 1)) >> 13) - (112 << 10))


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
    """Round a contiguous f32 array in place to the nearest fp16 values, as ``x.astype(np.float16)`` would."""
    flat = x.reshape(-1)
    for i in range(flat.size):
        flat[i] = f16_to_f32(f32_to_f16(flat[i]))


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


def attend_segments(q: np.ndarray, k: np.ndarray, v: np.ndarray, batch: SegmentBatch, layer: int,
                    cos: np.ndarray, sin: np.ndarray, scale: float, window: int, neox: bool,
                    q_scale: float = 1.0) -> np.ndarray:
    """``attend`` for every segment of a batch, each against its own cache: q (ΣT, n_head, d), k/v (ΣT, n_kv, d)
    -> (ΣT, n_head · d). A decoding step (one token per segment) is one compiled call for all sequences: per
    sequence it computes what ``attend`` would, without a Python round trip per sequence and layer."""
    out = np.zeros((q.shape[0], q.shape[1] * q.shape[2]), np.float32)
    if batch.decoding:
        kts, vs = batch.cache_arrays
        _attend_decoding(q, k, v, kts, vs, batch.positions, layer, cos, sin, np.float32(scale), window, neox,
                         np.float32(q_scale), out)
        return out
    for rows, s in segment_rows(batch.segments):
        out[rows] = attend(q[rows], k[rows], v[rows], s.cache.kt[layer], s.cache.v[layer], s.start_pos,
                           cos[rows], sin[rows], scale, window, neox, q_scale)
    return out


@njit(cache=True, nogil=True, parallel=True)
def _attend_decoding(q, k, v, kts, vs, positions, layer, cos, sin, scale, window, neox, q_scale, out):
    """Row i: one new token of sequence i at positions[i] against kts[i][layer] / vs[i][layer] (see attend);
    the sequences are shared among the kernel threads (each row's arithmetic, so its bits, are the same)."""
    for i in prange(q.shape[0]):
        kt_cache, v_cache, pos, row = kts[i][layer], vs[i][layer], np.int64(positions[i]), slice(i, i + 1)
        qi = _store(q[row], k[row], v[row], kt_cache, v_cache, pos, cos[row], sin[row], neox, q_scale)
        _attend_rows(qi, kt_cache, v_cache, pos, scale, window, out[row])


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray,
           start_pos: int, cos: np.ndarray, sin: np.ndarray, scale: float, window: int, neox: bool,
           q_scale: float = 1.0) -> np.ndarray:
    """T new tokens of one sequence: rotate q (T, n_head, d) and k (T, n_kv, d), store k/v at positions
    [start_pos, start_pos + T) of the layer's cache (float16 bits as uint16, K transposed: kt_cache (n_kv, d,
    capacity); v_cache (n_kv, capacity, d)), and let each query attend causally (and within ``window`` if > 0)
    over the cache, scores times ``scale``. Returns (T, n_head · d). ``q_scale`` multiplies the rotated queries
    first (gemma3 scales them there, before their f16 rounding, and attends with scale 1).

    Chunks of two or more tokens give the same bits as the whole prompt (llama.cpp's batch order); one token
    takes the order of llama.cpp's single-token step. The twin is ops.rope_* + KVCache.write + ops.attention.
    """
    q = _store(q, k, v, kt_cache, v_cache, start_pos, cos, sin, neox, np.float32(q_scale))
    out = np.zeros((q.shape[0], q.shape[1] * q.shape[2]), np.float32)
    rows = _attend_rows_parallel if q.shape[0] >= PARALLEL_ROWS else _attend_rows
    rows(q, kt_cache, v_cache, start_pos, scale, window, out)
    return out


@njit(cache=True, nogil=True)
def _store(q: np.ndarray, k: np.ndarray, v: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray, start_pos: int,
           cos: np.ndarray, sin: np.ndarray, neox: bool, q_scale: np.float32) -> np.ndarray:
    """Rotate q and k, scale q, round q/k/v to f16, write k/v into the cache; returns the rotated, rounded q."""
    T = q.shape[0]
    q, k, v = q.copy(), k.copy(), v.copy()
    for t in range(T):
        _rotate(q[t], cos[t], sin[t], neox)
        _rotate(k[t], cos[t], sin[t], neox)
    if q_scale != 1:
        q *= q_scale
    round_f16(q)                                                # llama.cpp's K·Q runs in f16
    for t in range(T):                                          # its cache holds f16
        for h in range(k.shape[1]):
            for i in range(k.shape[2]):
                kt_cache[h, i, start_pos + t] = f32_to_f16(k[t, h, i])
            for i in range(v.shape[2]):
                v_cache[h, start_pos + t, i] = f32_to_f16(v[t, h, i])
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
    n_kv = kt_cache.shape[0]
    group = n_head // n_kv
    start = first // 16 * 16                                   # the first 16-position chunk that has a key
    probs = np.zeros((group, end - start), np.float32)         # positions start..end-1, masked ones stay 0
    for kv in range(n_kv):                                     # the heads of a group share each K and V load
        heads = q[kv * group:(kv + 1) * group]
        _scores(heads, kt_cache[kv], first, end, start, decode, probs)
        for g in range(group):
            _softmax(probs[g], first - start, np.float32(scale))
        _weighted_values(probs, v_cache[kv], start, end, decode, out[kv * group * d:(kv + 1) * group * d])


@njit(cache=True, nogil=True, inline="always")
def _acc_index(i: int, decode: bool) -> int:
    """Which accumulator sums element i: ggml_vec_dot_f16 keeps 4 (64 values a step), tinyBLAS one."""
    return (i // 16) % 4 if decode else 0


@njit(cache=True, nogil=True)
def _reduce_lanes(v: np.ndarray, n: int, out: np.ndarray) -> None:
    """out[c] = _mm512_reduce_add_ps of the 16 lanes v[:, c], for c < n (the tree of fpmath.reduce16)."""
    for c in range(n):
        t0, t1, t2, t3 = v[0, c] + v[8, c], v[1, c] + v[9, c], v[2, c] + v[10, c], v[3, c] + v[11, c]
        t4, t5, t6, t7 = v[4, c] + v[12, c], v[5, c] + v[13, c], v[6, c] + v[14, c], v[7, c] + v[15, c]
        out[c] = ((t4 + t0) + (t6 + t2)) + ((t5 + t1) + (t7 + t3))


@njit(cache=True, nogil=True)
def _scores(heads, keys_t, first, end, start, decode, probs):
    """probs[g, s - start] = q_g·k_s for the group's heads (group, d) and s in [first, end), 64 positions at a
    time in the vector lanes. Lane m of the dot sums elements m, m + 16, ... in order, each into accumulator
    _acc_index(i); the accumulators combine as GGML_F32x16_REDUCE does, (a0 + a2) + (a1 + a3)."""
    group, d = heads.shape
    acc = np.zeros((group, 4, 64), np.float32)               # accumulators 1..3 stay 0 unless decode
    v = np.empty((group, 16, 64), np.float32)
    used = 4 if decode else 1
    for s0 in range(first, end, 64):
        n = min(64, end - s0)
        for m in range(16):
            acc[:, :used, :n] = 0.0
            for i in range(m, d, 16):
                keys, a = keys_t[i, s0:s0 + n], _acc_index(i, decode)
                for g in range(group):
                    qi, row = heads[g, i], acc[g, a]
                    for c in range(n):         # 1-d row views: LLVM vectorizes these, not 2-d indexing
                        row[c] = fma32(qi, f16_to_f32(keys[c]), row[c])
            for g in range(group):
                lanes, dst = acc[g], v[g, m]
                for c in range(n):
                    dst[c] = (lanes[0, c] + lanes[2, c]) + (lanes[1, c] + lanes[3, c])
        for g in range(group):
            _reduce_lanes(v[g], n, probs[g, s0 - start:])


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
def _weighted_values(probs, values, start, end, decode, out):
    """out (group · d,) = Σ_s probs[g, s - start] · v_s for each head g of the group: position s goes to lane
    s % 16 of accumulator _acc_index(s), in position order (chunks of 16 count from cache position 0)."""
    group = probs.shape[0]
    d = values.shape[1]
    acc = np.zeros((group, 4, 64), np.float32)               # accumulators 1..3 stay 0 unless decode
    v = np.empty((group, 16, 64), np.float32)
    used = 4 if decode else 1
    for i0 in range(0, d, 64):
        n = min(64, d - i0)
        for m in range(16):
            acc[:, :used, :n] = 0.0
            for s in range(start + (m - start) % 16, end, 16):
                value, a = values[s, i0:i0 + n], _acc_index(s, decode)
                for g in range(group):
                    p, row = probs[g, s - start], acc[g, a]
                    for c in range(n):
                        row[c] = fma32(p, f16_to_f32(value[c]), row[c])
            for g in range(group):
                lanes, dst = acc[g], v[g, m]
                for c in range(n):
                    dst[c] = (lanes[0, c] + lanes[2, c]) + (lanes[1, c] + lanes[3, c])
        for g in range(group):
            _reduce_lanes(v[g], n, out[g * d + i0:])
