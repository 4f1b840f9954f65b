"""8-bit activation blocks, the right-hand side of every integer dot product (llama.cpp's vec_dot_type).

llama.cpp never multiplies quantized weights by float activations: each input row is first cut into blocks of
32, d = amax / 127, q = round(x * 127 / amax) (round half to even, as the AVX2 ``_mm256_round_ps`` path), and
d is stored as fp16. Q4_0 / Q5_0 / Q8_0 weights dot with these Q8_0 blocks; Q4_1 / Q5_1 with Q8_1 blocks,
which add s = fp16(d * sum(q)) so the weight minimum m enters as one m * s per block. We mirror that bit for
bit (including the fp16 rounding of d and s) so our logits stay close to the oracle's. ``isum`` (the exact
integer sum of q) is what the offset formats (Q4_0: q - 8, Q5_0: q - 16) subtract in integers.

The format modules call ``quantize_q8`` from Python and pass the blocks to their kernels (one quantization per
input, shared by fused Q|K|V rows). Kernels must not call it from inside: Numba's on-disk cache of a kernel is
keyed on its own file only and would keep a stale inlined copy after an edit here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

QK8 = 32  # values per activation block (Q8_0 / Q8_1)


@njit(cache=True, nogil=True)
def fp16_round(v: np.float32) -> np.float32:
    """The nearest fp16 value (round half to even, like F16C's vcvtps2ph), returned as float32."""
    a = abs(np.float64(v))
    if a >= 65520.0:  # rounds past the largest half (65504): infinity
        return np.float32(np.inf) if v > 0 else np.float32(-np.inf)
    if a < 2.0**-14:  # subnormal halves: a fixed step of 2**-24
        step = 2.0**-24
    else:  # normal halves keep 11 significant bits; a = m * 2**e with m in [0.5, 1)
        step = math.ldexp(1.0, math.frexp(a)[1] - 11)
    r = np.rint(a / step) * step  # exact in float64: a / step has at most 11 + 24 bits
    return np.float32(r) if v >= 0 else np.float32(-r)


@njit(cache=True, nogil=True)
def quantize_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (T, cols) f32 -> qy (T, cols) i8, d (T, nb) f32, s (T, nb) f32, isum (T, nb) i32; nb = cols / 32.

    No fastmath here: 127 / amax must be a true division (fastmath may use an approximate reciprocal).
    """
    T, cols = x.shape
    nb = cols // QK8
    qy = np.empty((T, cols), np.int8)
    d = np.empty((T, nb), np.float32)
    s = np.empty((T, nb), np.float32)
    isum = np.empty((T, nb), np.int32)
    for n in range(T):
        for b in range(nb):
            amax = np.float32(0.0)
            for i in range(QK8):
                amax = max(amax, abs(x[n, b * QK8 + i]))
            inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
            total = 0
            for i in range(QK8):
                q = int(np.rint(x[n, b * QK8 + i] * inv))
                qy[n, b * QK8 + i] = q
                total += q
            dn = amax / np.float32(127.0)
            d[n, b] = fp16_round(dn)
            s[n, b] = fp16_round(dn * np.float32(total))
            isum[n, b] = total
    return qy, d, s, isum


def quantize_q8_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin of ``quantize_q8`` (same outputs, same rounding); used by the tests."""
    x = np.asarray(x, dtype=np.float32)
    blocks = x.reshape(x.shape[0], -1, QK8)                               # (T, nb, 32)
    amax = np.abs(blocks).max(axis=-1)                                    # (T, nb)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inv[..., None]).astype(np.int32)                  # (T, nb, 32)
    isum = q.sum(axis=-1, dtype=np.int32)
    dn = amax / np.float32(127.0)
    d = dn.astype(np.float16).astype(np.float32)
    s = (dn * isum.astype(np.float32)).astype(np.float16).astype(np.float32)
    return q.astype(np.int8).reshape(x.shape), d, s, isum
