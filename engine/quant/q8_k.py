"""Q8_K activation blocks: the right-hand side of every K-quant (Q2_K..Q6_K) integer dot product.

One block = 256 values: an f32 scale d, 256 int8 q and 16 ``bsums`` (sums of 16 consecutive q). The quantizer
is llama.cpp's ``quantize_row_q8_K_ref``: ``max`` = the signed value of largest magnitude (the first one on
ties), ``iscale = -127 / max``, ``q = min(127, nearest_int(iscale * x))`` (round half to even), ``d = 1 / iscale``
(so d is negative when max is positive). The bsums let formats with a minimum or an offset (Q2_K, Q4_K, Q5_K:
``m * sum(y)``; Q3_K, Q6_K: ``-4`` / ``-32`` times ``sum(y)``) keep a pure unsigned integer inner loop.

Also home of ``i32`` and ``mad2``, the integer idioms every K-quant kernel is written with.

Numba's cache does not notice edits to this file from the kernels that inline it: clear ``__pycache__`` after
changing anything here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

QK_K = 256  # values per activation block
GROUP = 16  # values per bsums entry
i32 = np.int32  # every integer step of a kernel is wrapped in it: Numba would widen to int64 (kernels.md §3.1)


@njit(cache=True, nogil=True)
def quantize_q8k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (T, cols) f32 -> qy (T, cols) i8, d (T, nb) f32, bsums (T, cols / 16) i32; nb = cols / 256.

    No fastmath: -127 / max and 1 / iscale must be true divisions, as in ggml.
    """
    T, cols = x.shape
    nb = cols // QK_K
    qy = np.empty((T, cols), np.int8)
    d = np.empty((T, nb), np.float32)
    bsums = np.empty((T, cols // GROUP), np.int32)
    for n in range(T):
        for b in range(nb):
            o = b * QK_K
            amax = np.float32(0.0)
            vmax = np.float32(0.0)
            for i in range(QK_K):
                a = abs(x[n, o + i])
                if a > amax:
                    amax = a
                    vmax = x[n, o + i]
            iscale = np.float32(-127.0) / vmax if amax != 0 else np.float32(0.0)
            for i in range(QK_K):
                qy[n, o + i] = min(np.float32(127.0), np.rint(iscale * x[n, o + i]))
            for g in range(QK_K // GROUP):
                total = np.int32(0)
                for i in range(GROUP):
                    total = np.int32(total + qy[n, o + g * GROUP + i])
                bsums[n, b * (QK_K // GROUP) + g] = total
            d[n, b] = np.float32(1.0) / iscale if amax != 0 else np.float32(0.0)
    return qy, d, bsums


def quantize_q8k_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin of ``quantize_q8k`` (same outputs, same rounding); used by the tests."""
    x = np.asarray(x, dtype=np.float32)
    T, cols = x.shape
    blocks = x.reshape(T, cols // QK_K, QK_K)                               # (T, nb, 256)
    first = np.abs(blocks).argmax(axis=-1)[..., None]                       # first largest |x|
    vmax = np.take_along_axis(blocks, first, axis=-1)[..., 0]              # (T, nb), signed
    with np.errstate(divide="ignore"):
        iscale = np.where(vmax != 0, np.float32(-127.0) / vmax, np.float32(0.0)).astype(np.float32)
        d = np.where(vmax != 0, np.float32(1.0) / iscale, np.float32(0.0)).astype(np.float32)
    q = np.minimum(np.rint(iscale[..., None] * blocks), 127).astype(np.int8)  # (T, nb, 256)
    bsums = q.reshape(T, -1, GROUP).sum(axis=-1, dtype=np.int32)            # (T, cols / 16)
    return q.reshape(T, cols), d, bsums


@njit(cache=True, inline="always")
def mad2(acc: np.int32, u0: np.int32, y0: np.int32, u1: np.int32, y1: np.int32) -> np.int32:
    """acc + u0 * y0 + u1 * y1 in int32, u and y small: inside a 64-lane loop LLVM turns this into vpmaddwd /
    VNNI vpdpwssd (16-bit products summed in pairs)."""
    return i32(acc + i32(u0) * y0 + i32(u1) * y1)
