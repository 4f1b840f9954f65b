"""Numba twins of engine.ops for the decode hot path: one compiled call where NumPy needs a dozen small ones.

At one token per step the arrays are tiny and NumPy's per-call overhead, not arithmetic, is what costs. Each function
here computes what its twin in engine.ops computes (tests/engine/test_ops_jit.py checks them against each other).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from engine.fpmath import (
    add16,
    expf,
    f16_to_f32,
    f32_bits,
    f32_to_f16,
    floats4,
    fma16,
    fma32,
    halves16,
    hmax16,
    hsum16,
    load16,
    max16,
    rows4,
    splat16,
    store16,
    zeros16,
)
from engine.kv_cache import SegmentBatch, segment_rows
from engine.threads import kernel_threads


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
    n_head, n_kv = q.shape[1], kt_cache.shape[0]
    if q.shape[0] == 1 and n_head > 1:
        parts = min(n_head // n_kv, -(-kernel_threads() // n_kv))     # split groups only to fill threads
        _attend_token_parallel(q[0], kt_cache, v_cache, start_pos, scale, window, out[0], parts)
        return out
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


@njit(cache=True, nogil=True, parallel=True)
def _attend_token_parallel(q, kt_cache, v_cache, pos, scale, window, out, parts):
    """One decoding token, its heads shared among the threads in ``parts`` runs per KV head (a run's query heads
    share the conversion of their KV head's cache): at a few hundred positions attention was a quarter of a serial
    decode step. Each head's arithmetic, so its bits, is the same as in _attend_rows; q (n_head, d), out
    (n_head · dv,)."""
    n_kv, dv = kt_cache.shape[0], v_cache.shape[2]
    group = q.shape[0] // n_kv
    per_part = -(-group // parts)
    first = max(0, pos - window + 1) if window > 0 else 0
    for task in prange(n_kv * parts):
        g = task // parts
        lo = g * group + task % parts * per_part
        hi = min((g + 1) * group, lo + per_part)
        if lo < hi:
            _attend_one(q[lo:hi], kt_cache[g:g + 1], v_cache[g:g + 1], first, pos + 1, scale, out[lo * dv:hi * dv],
                        True)


@njit(cache=True, nogil=True)
def _attend_one(q: np.ndarray, kt_cache: np.ndarray, v_cache: np.ndarray, first: int, end: int, scale: float,
                out: np.ndarray, decode: bool) -> None:
    """softmax(q·K[first:end] · scale) · V[first:end] for every head of one query; out (n_head · dv,). The arrays
    are C-contiguous: q (n_head, d) f32, kt_cache (n_kv, d, capacity) / v_cache (n_kv, capacity, dv) f16 bits.

    The float order is llama.cpp's (flash attention off), so that logits match it bit for bit: K·Q and P·V are
    f16 × f16 matmuls, summed in the 16 float lanes of a __m512 — by ggml_vec_dot_f16 (4 accumulators, 64 values
    a step) when one token is evaluated (``decode``), by tinyBLAS (one accumulator) for a batch — then
    _mm512_reduce_add_ps; the softmax is ggml_vec_soft_max_f32 (ggml's expf, 16-lane chunk sums added in float64,
    times the float32 reciprocal) and the probabilities are rounded to f16 before P·V. Lane and chunk positions
    count from cache position 0, as in llama.cpp's KV cache. Positions outside [first, end) never reach a result.
    """
    n_kv, d, capacity = kt_cache.shape
    start = first // 16 * 16                                   # the first 16-position chunk that has a key
    n_blocks = (end - start + 15) // 16
    probs = np.empty((q.shape[0], 16 * n_blocks), np.float32)  # positions start.., whole chunks
    # K·Q: dims summed, 16 positions side by side (lanes outside [first, end) are masked by the softmax)
    _lane_dots(q, kt_cache, start, capacity, capacity - start, d, probs, probs.shape[1], n_blocks, 2, decode)
    _softmax(probs, first - start, end - start, np.float32(scale))
    dv = v_cache.shape[2]                                      # P·V: positions summed, 16 columns side by side
    if dv % 16 == 0:
        _lane_dots(probs, v_cache, start * dv, dv, dv, end - start, out, dv, dv // 16, 1, decode)
        return
    padded_row = (dv + 15) // 16 * 16                          # a head size off the lane grid (tiny test models):
    padded = np.empty(q.shape[0] * padded_row, np.float32)     # columns past dv read as 0, into whole-lane rows
    _lane_dots(probs, v_cache, start * dv, dv, dv, end - start, padded, padded_row, padded_row // 16, 1, decode)
    flat = out.reshape(-1)
    for h in range(q.shape[0]):
        flat[h * dv:(h + 1) * dv] = padded[h * padded_row:h * padded_row + dv]


@njit(cache=True, nogil=True)
def _softmax(probs: np.ndarray, skip: int, n: int, scale: np.float32) -> None:
    """ggml_vec_soft_max_f32 after the scale, in place on each row of probs (n_head, width = 16·ceil(n / 16)) over
    positions [skip, n): max, ggml's expf of the differences, 16-position chunk sums (reduce16) added in float64,
    times the float32 reciprocal; then rounded to f16 (the operand of P·V). Masked positions become 0."""
    width = probs.shape[1]                          # whole 16-position chunks (the tail padded with masked ones)
    lo, hi = np.uint64(skip), np.uint64(n)       # unsigned indices: no negative-index wraparound, loops vectorize
    for h in range(probs.shape[0]):
        for s in range(np.uint64(width)):         # masked positions -inf, which never wins a max (as they must not)
            probs[h, s] = probs[h, s] * scale if lo <= s < hi else np.float32(-np.inf)
        lanes = splat16(np.float32(-np.inf))
        for c0 in range(h * width, (h + 1) * width, 16):
            lanes = max16(lanes, load16(probs, c0))
        best = hmax16(lanes)                           # the maximum over [skip, n), as a sequential max takes it
        for s in range(np.uint64(width)):
            probs[h, s] = expf(probs[h, s] - best) if lo <= s < hi else np.float32(0.0)
        total = 0.0
        for c0 in range(h * width, (h + 1) * width, 16):
            total += np.float64(hsum16(load16(probs, c0)))
        inv = np.float32(1.0 / total)
        for s in range(lo, hi):
            probs[h, s] = f16_to_f32(f32_to_f16(probs[h, s] * inv))


@njit(cache=True, nogil=True)
def _lane_dots(xs, ys, y_0, y_step, lanes_end, n, dst, dst_row, n_cols, per_pass, decode):
    """Every dot product of attention, 16 at a time in vector lanes l < 16: for each row o of xs (n_rows, x_row)
    and column block i < n_cols,

        dst.flat[o·dst_row + 16 i + l] = Σ_{e < n} xs[o, e] · ys[o // group].flat[y_0 + 16 i + l + e·y_step]

    with xs f32, ys (n_kv, ...) f16 bits (both C-contiguous), group = n_rows // n_kv, and ys read as 0 in lanes
    16 i + l >= lanes_end (the K cache's capacity); summed as ggml_vec_dot_f16 sums one dot: element e in lane
    e % 16 of accumulator (e // 16) % 4 (``decode``) or of the only one (a batch: tinyBLAS), in order of e; then
    (a0 + a2) + (a1 + a3) and reduce16 over the 16 lanes. (P·V counts the accumulators from cache position 0, not
    from e = 0: the same pairs {a0, a2}, {a1, a3}, so the same sum.) Elements e >= n are never read. ``per_pass``
    (1 or 2): column blocks converted together, see _lane_dots_in_order."""
    if decode:
        _lane_dots_in_order(xs, ys, y_0, y_step, lanes_end, n, dst, dst_row, n_cols, per_pass, True)
    else:
        _lane_dots_in_order(xs, ys, y_0, y_step, lanes_end, n, dst, dst_row, n_cols, per_pass, False)


@njit(cache=True, nogil=True, inline="always")
def _lane_dots_in_order(xs, ys, y_0, y_step, lanes_end, n, dst, dst_row, n_cols, per_pass, decode):
    """_lane_dots for a constant ``decode``. Each column block of ys is first converted into a tile (n, 16) f32, one
    cache line an element, which the group's heads then share: the elements lie far apart in the cache (capacity or
    head size apart, often a power of two, so that read straight they crowd a few cache sets and are fetched again
    and again). K takes 2 blocks a pass (each key dim's whole cache line of halves), V one (its tile stays in L1).

    The 16 sum lanes go in 4 quads, lanes k, k + 4, k + 8, k + 12 (16 accumulators in registers): reduce16's tree
    adds exactly those first, s_k = (l_k+4 + l_k+12) + (l_k + l_k+8). Whole 64-element chunks fill accumulator j of
    each lane from block j; the last blocks take turns (``_rotated``). No helper called in these loops takes an
    array: Numba would count references on every call."""
    n_rows, x_row = xs.shape
    n_kv = ys.shape[0]
    group, y_head = n_rows // n_kv, ys.size // n_kv
    chunks, n_blocks = n // 64, (n + 15) // 16
    size = 256 * n_blocks                                      # a tile: (16 · n_blocks, 16), rows past n stay 0
    tiles = np.empty(per_pass * size, np.float32)
    for j in range(per_pass):
        tiles[j * size + 16 * n:(j + 1) * size] = 0.0
    quads = np.empty(64, np.float32)
    for kv in range(n_kv):
        for i0 in range(0, n_cols, per_pass):
            at, lanes = kv * y_head + y_0 + 16 * i0, lanes_end - 16 * i0
            for e in range(n):
                store16(tiles, 16 * e, halves16(ys, at + e * y_step, lanes))
                if per_pass == 2:
                    store16(tiles, size + 16 * e, halves16(ys, at + e * y_step + 16, lanes - 16))
            for i in range(i0, min(i0 + per_pass, n_cols)):
                t_at = (i - i0) * size
                for o in range(kv * group, (kv + 1) * group):
                    x_at = o * x_row
                    for k in range(4):
                        z = zeros16()
                        la = lb = lc = ld = (z, z, z, z)          # lanes k, k + 4, k + 8, k + 12
                        for c in range(chunks):
                            e, t = 64 * c + k, t_at + 16 * (64 * c + k)
                            la = _fma4(la, floats4(xs, x_at + e, 16, 4), rows4(tiles, t, 256), decode)
                            lb = _fma4(lb, floats4(xs, x_at + e + 4, 16, 4), rows4(tiles, t + 64, 256), decode)
                            lc = _fma4(lc, floats4(xs, x_at + e + 8, 16, 4), rows4(tiles, t + 128, 256), decode)
                            ld = _fma4(ld, floats4(xs, x_at + e + 12, 16, 4), rows4(tiles, t + 192, 256), decode)
                        for b in range(4 * chunks, n_blocks):       # the (up to 4) blocks after the chunks
                            e = 16 * b + k                          # (in a partial one, lanes past n add 0 · 0)
                            x = floats4(xs, x_at + e, 4, min(4, max(0, (n - e + 3) // 4)))
                            la, lb, lc, ld = _rotated(la, lb, lc, ld, x, rows4(tiles, t_at + 16 * e, 64), decode)
                        quad = add16(add16(_combined(lb), _combined(ld)), add16(_combined(la), _combined(lc)))
                        store16(quads, 16 * k, quad)
                    total = add16(add16(load16(quads, 0), load16(quads, 32)),
                                  add16(load16(quads, 16), load16(quads, 48)))
                    store16(dst, o * dst_row + 16 * i, total)


@njit(cache=True, nogil=True, inline="always")
def _fma4(acc, x, y, decode):
    """One lane's elements of a 64-element chunk, x[j] · y[j] of block j: into accumulator j (ggml_vec_dot_f16)
    or, in order, into the only one (tinyBLAS)."""
    a0, a1, a2, a3 = acc
    if decode:
        return fma16(x[0], y[0], a0), fma16(x[1], y[1], a1), fma16(x[2], y[2], a2), fma16(x[3], y[3], a3)
    return fma16(x[3], y[3], fma16(x[2], y[2], fma16(x[1], y[1], fma16(x[0], y[0], a0)))), a1, a2, a3


@njit(cache=True, nogil=True, inline="always")
def _rotated(la, lb, lc, ld, x, y, decode):
    """The quad's 4 lanes' elements of a single block, x[j] · y[j] into acc[0] of lane j; in decode the
    accumulators then move down one place, so that acc[0] is the next block's."""
    return (_rotated1(la, x[0], y[0], decode), _rotated1(lb, x[1], y[1], decode),
            _rotated1(lc, x[2], y[2], decode), _rotated1(ld, x[3], y[3], decode))


@njit(cache=True, nogil=True, inline="always")
def _rotated1(acc, x, y, decode):
    """One sum lane's element of a single block (see _rotated)."""
    if decode:
        return acc[1], acc[2], acc[3], fma16(x, y, acc[0])
    return fma16(x, y, acc[0]), acc[1], acc[2], acc[3]


@njit(cache=True, nogil=True, inline="always")
def _combined(acc):
    """GGML_F32x16_REDUCE's (a0 + a2) + (a1 + a3). Which accumulator a chain started in does not matter: shifted
    by any number of places, the pairs stay {a0, a2} and {a1, a3}, and float addition commutes exactly."""
    return add16(add16(acc[0], acc[2]), add16(acc[1], acc[3]))
