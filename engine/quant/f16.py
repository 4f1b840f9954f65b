"""F16 weights, kept as their 2-byte bits: resident memory = file bytes (widening them to float32 at load doubled it).

The kernels widen the halves in registers (vcvtph2ps, 16 per instruction) and accumulate in float32. They are
generic over the two 2-byte float formats: the dtype of the bits picks the conversion (``to_f32``), uint16 for
IEEE half (F16, here) and int16 for bfloat16 (BF16, bf16.py passes its bits viewed as int16).

One Numba kernel serves decode (T = 1) and prefill (T tokens): 4 rows x 4 tokens at a time, 16 float32 lanes of
each of the 16 dot products in zmm accumulators, the halves converted straight from L1 (no scratch buffer: a
converted tile in L2 was slower than converting again for every group of 4 tokens). Each thread takes one
contiguous range of rows; no BLAS, so ``set_threads`` controls it and no OpenBLAS thread pool wakes up
(kernels.md §3.5). No fixed float order (unlike the block formats): llama.cpp itself sums F16 in another order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from engine.fpmath import f16_to_f32
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.F16
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]

# reassociation lets LLVM vectorize the sums, contraction fuses them into FMAs; no nnan / ninf, so an inf or NaN
# weight propagates as in NumPy
FAST = {"reassoc", "contract"}


class Packed(NamedTuple):
    rows: int
    w: np.ndarray  # (rows, cols) uint16: IEEE half bits, C-contiguous


def bits(raw: np.ndarray) -> np.ndarray:
    """uint8 (rows, 2 * cols) little-endian 2-byte floats -> (rows, cols) uint16 bits (a copy)."""
    raw = np.asarray(raw)
    return raw.view("<u2").reshape(raw.shape[0], -1).copy()


def values(w: np.ndarray) -> np.ndarray:
    """(..., cols) uint16 half bits -> float32 (exact)."""
    return np.asarray(w).view(np.float16).astype(np.float32)


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, 2 * cols) -> f32 (rows, cols)."""
    raw = np.asarray(raw)
    return raw.view(np.float16).reshape(raw.shape[0], -1).astype(np.float32)


def repack(raw: np.ndarray) -> Packed:
    w = bits(raw)
    return Packed(w.shape[0], w)


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return values(packed.w[np.asarray(ids, dtype=np.int64).reshape(-1)])


def concat(parts: list[Packed]) -> Packed:
    return Packed(sum(p.rows for p in parts), np.concatenate([p.w for p in parts]))


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    return products(packed.w, np.asarray(x).reshape(1, -1))[0]


def matmul(packed: Packed, x: np.ndarray) -> np.ndarray:
    return products(packed.w, x)


def products(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x (T, cols) @ W.T -> (T, rows) f32, W given by its bits w (rows, cols): uint16 F16 or int16 BF16."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    _matmul(w, x, out, kernel_threads())
    return out


# ----------------------------------------------------------------------------------------------- kernels


@intrinsic
def bf16_to_f32(typingctx, b):
    """The float32 whose top 16 bits are the bfloat16 bits ``b`` (int16), exact: zero-extend, shift, bitcast."""
    sig = types.float32(types.int16)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        word = builder.zext(context.cast(builder, args[0], signature.args[0], types.int16), i32)
        return builder.bitcast(builder.shl(word, ir.Constant(i32, 16)), ir.FloatType())

    return sig, codegen


def to_f32(b):
    """float32 value of one 2-byte float: uint16 = IEEE half bits, int16 = bfloat16 bits (Numba only)."""
    raise NotImplementedError("to_f32 is only callable from Numba kernels")


@overload(to_f32, inline="always")
def _to_f32(b):
    if b == types.uint16:
        return lambda b: f16_to_f32(b)
    if b == types.int16:
        return lambda b: bf16_to_f32(b)
    return None


@njit(parallel=True, fastmath=FAST, cache=True, nogil=True)
def _matmul(w, x, out, n_threads):
    """out (T, rows) = x (T, cols) @ W.T, w (rows, cols) 2-byte float bits.

    Each thread takes one contiguous range of 4-row groups, walked 64 rows at a time; within such a block the
    tokens go 64 at a time (x block <= 64 * cols * 4 bytes, in L2) and each group of 4 rows (in L1) meets every
    group of 4 tokens of the block."""
    rows, T = w.shape[0], x.shape[0]
    n_groups = (rows + 3) // 4
    n_chunks = max(1, min(n_threads, n_groups))
    for c in prange(n_chunks):
        stop = min(rows, (c + 1) * n_groups // n_chunks * 4)
        for r0 in range(c * n_groups // n_chunks * 4, stop, 64):
            for t0 in range(0, T, 64):
                _block(w, x, out, r0, min(r0 + 64, stop), t0, min(t0 + 64, T))


@njit(fastmath=FAST, cache=True, nogil=True, inline="always")
def _block(w, x, out, r0, r1, t0, t1):
    """out[t0:t1, r0:r1]: 4x4 tiles, then the leftover tokens (< 4) of each row group, then the leftover rows."""
    t4 = t1 - (t1 - t0) % 4
    r4 = r1 - (r1 - r0) % 4
    for r in range(r0, r4, 4):
        for t in range(t0, t4, 4):
            _dot44(w, r, x, t, out)
        for i in range(r, r + 4):
            _dot1n(w, i, x, t4, t1 - t4, out)
    for i in range(r4, r1):
        for t in range(t0, t1, 4):
            _dot1n(w, i, x, t, min(4, t1 - t), out)


@njit(fastmath=FAST, cache=True, nogil=True, inline="always")
def _dot44(w, r, x, t, out):
    """out[t:t+4, r:r+4]: 16 dot products sharing each loaded weight and activation 4 times."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
    for k in range(w.shape[1]):
        w0, w1, w2, w3 = to_f32(w[r, k]), to_f32(w[r + 1, k]), to_f32(w[r + 2, k]), to_f32(w[r + 3, k])
        x0, x1, x2, x3 = x[t, k], x[t + 1, k], x[t + 2, k], x[t + 3, k]
        a00 += w0 * x0
        a01 += w1 * x0
        a02 += w2 * x0
        a03 += w3 * x0
        a10 += w0 * x1
        a11 += w1 * x1
        a12 += w2 * x1
        a13 += w3 * x1
        a20 += w0 * x2
        a21 += w1 * x2
        a22 += w2 * x2
        a23 += w3 * x2
        a30 += w0 * x3
        a31 += w1 * x3
        a32 += w2 * x3
        a33 += w3 * x3
    out[t, r], out[t, r + 1], out[t, r + 2], out[t, r + 3] = a00, a01, a02, a03
    out[t + 1, r], out[t + 1, r + 1], out[t + 1, r + 2], out[t + 1, r + 3] = a10, a11, a12, a13
    out[t + 2, r], out[t + 2, r + 1], out[t + 2, r + 2], out[t + 2, r + 3] = a20, a21, a22, a23
    out[t + 3, r], out[t + 3, r + 1], out[t + 3, r + 2], out[t + 3, r + 3] = a30, a31, a32, a33


@njit(fastmath=FAST, cache=True, nogil=True, inline="always")
def _dot1n(w, r, x, t, n, out):
    """out[t:t+n, r] for one row and n (0..4) tokens, each weight converted once for the n of them. Also the
    matvec (T = 1): one row at a time keeps the weights one sequential stream; reading 2 or 4 rows side by side
    shares the x loads (10% faster from cache) but ran 2.7x slower from DRAM here (49152 x 576)."""
    if n == 1:
        a0 = np.float32(0.0)
        for k in range(w.shape[1]):
            a0 += to_f32(w[r, k]) * x[t, k]
        out[t, r] = a0
    elif n == 2:
        a0 = a1 = np.float32(0.0)
        for k in range(w.shape[1]):
            wk = to_f32(w[r, k])
            a0 += wk * x[t, k]
            a1 += wk * x[t + 1, k]
        out[t, r], out[t + 1, r] = a0, a1
    elif n == 3:
        a0 = a1 = a2 = np.float32(0.0)
        for k in range(w.shape[1]):
            wk = to_f32(w[r, k])
            a0 += wk * x[t, k]
            a1 += wk * x[t + 1, k]
            a2 += wk * x[t + 2, k]
        out[t, r], out[t + 1, r], out[t + 2, r] = a0, a1, a2
    elif n == 4:
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for k in range(w.shape[1]):
            wk = to_f32(w[r, k])
            a0 += wk * x[t, k]
            a1 += wk * x[t + 1, k]
            a2 += wk * x[t + 2, k]
            a3 += wk * x[t + 3, k]
        out[t, r], out[t + 1, r], out[t + 2, r], out[t + 3, r] = a0, a1, a2, a3
