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

import numpy as np
from numba import njit, prange

from engine.fpmath import f16_to_f32, f32_from_bits, f32_to_f16

QK8 = 32  # values per activation block (Q8_0 / Q8_1)


PARALLEL_TOKENS = 8    # a batch this long (prefill, 8 decoding sequences) is quantized by all kernel threads


def quantize_q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x (T, cols) -> qy (T, cols) i8, d (T, nb) f32, s (T, nb) f32, isum (T, nb) i32; nb = cols / 32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    T, cols = x.shape
    nb = cols // QK8
    out = (np.empty((T, cols), np.int8), np.empty((T, nb), np.float32), np.empty((T, nb), np.float32),
           np.empty((T, nb), np.int32))
    (_quantize_parallel if T >= PARALLEL_TOKENS else _quantize_serial)(x, *out)
    return out


@njit(cache=True, nogil=True, inline="always")
def _quantize_row(x, qy, d, s, isum):
    """One token: x (cols,) -> qy (cols,), d s isum (nb,). No fastmath: 127 / amax must be a true division.

    amax is taken on the bit patterns (for non-NaN floats, |x| orders as its bits without the sign), and the
    fp16 rounding of d and s is the hardware conversion: branch-free, so the loops vectorize."""
    bits = x.view(np.uint32)
    for b in range(qy.shape[0] // QK8):
        top = np.uint32(0)
        for i in range(b * QK8, (b + 1) * QK8):
            top = max(top, bits[i] & np.uint32(0x7FFFFFFF))
        amax = f32_from_bits(top)
        inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
        total = np.int32(0)
        for i in range(b * QK8, (b + 1) * QK8):
            q = np.int32(np.rint(x[i] * inv))
            qy[i] = q
            total += q
        dn = amax / np.float32(127.0)
        d[b] = f16_to_f32(f32_to_f16(dn))
        s[b] = f16_to_f32(f32_to_f16(dn * np.float32(total)))
        isum[b] = total


@njit(cache=True, nogil=True)
def _quantize_serial(x, qy, d, s, isum):
    for n in range(x.shape[0]):
        _quantize_row(x[n], qy[n], d[n], s[n], isum[n])


@njit(cache=True, nogil=True, parallel=True)
def _quantize_parallel(x, qy, d, s, isum):
    for n in prange(x.shape[0]):
        _quantize_row(x[n], qy[n], d[n], s[n], isum[n])


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
