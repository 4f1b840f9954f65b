"""Q4_0: blocks of 32 weights {fp16 d, u8 qs[16]}; w = d * (q - 8) with q in 0..15.

Byte j of qs holds element j in its low nibble and element j + 16 in its high nibble. Dot product as
llama.cpp's vec_dot_q4_0_q8_0, the offset taken out in integers: sumi = sum(q * yq) - 8 * sum(yq),
acc += d * dy * sumi.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q4_0
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 16, 64) u8  | row-major fields: (rows, nb, 16)
    d: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 18)
    return Packed(b.shape[0], b[..., 2:], _tiles.f16(b[..., 0:2]))


def _values(f: Packed) -> np.ndarray:
    q = np.concatenate([f.qs & 15, f.qs >> 4], axis=-1).astype(np.int8) - np.int8(8)  # (rows, nb, 32)
    return (f.d[..., None] * q.astype(np.float32)).reshape(f.rows, -1)   # same float ops as gguf-py


def repack(raw: np.ndarray) -> Packed:
    return _tiles.tile(_fields(raw))


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, row_bytes) -> f32 (rows, cols), equal to gguf.quants.dequantize."""
    return _values(_fields(raw))


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return _values(_tiles.gather(packed, ids))


concat = _tiles.concat


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    return matmul(packed, x.reshape(1, -1))[0]


def matmul(packed: Packed, x: np.ndarray) -> np.ndarray:
    qy, dy, _, isum = quantize_q8(np.ascontiguousarray(x, dtype=np.float32))
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(packed.qs, packed.d, qy, dy, isum, out, kernel_threads())
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matmul(qs, d, qy, dy, isum, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 16, 64) u8, d (n_tiles, nb, 64) f32; qy (T, cols) i8, dy (T, nb) f32, isum (T, nb) i32.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((4, 64), np.float32)  # (tokens, rows) of one micro-batch
        si = np.empty((4, 64), np.int32)
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, d, qy, dy, isum, t, out, acc, si)


@njit(fastmath=True, cache=True, inline="always")
def _tile(qs, d, qy, dy, isum, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens, 4 tokens at a time (see q4_1._tile for the loop-shape rules)."""
    nb, half = qs.shape[1], qs.shape[2] // 2
    T = qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    for n0 in range(0, T, 4):
        nn = min(4, T - n0)
        for n in range(nn):
            for r in range(64):
                acc[n, r] = 0.0
        for b in range(nb):
            for n in range(nn):
                for r in range(64):
                    si[n, r] = 0
            for jj in range(half):
                j = 2 * jj
                o = b * 32 + j
                for n in range(nn):
                    y0 = np.int32(qy[n0 + n, o])
                    y1 = np.int32(qy[n0 + n, o + 16])
                    y2 = np.int32(qy[n0 + n, o + 1])
                    y3 = np.int32(qy[n0 + n, o + 17])
                    for r in range(64):
                        q0 = np.int32(qs[t, b, j, r])
                        q1 = np.int32(qs[t, b, j + 1, r])
                        si[n, r] = np.int32(si[n, r] + (q0 & 15) * y0 + (q0 >> 4) * y1
                                            + (q1 & 15) * y2 + (q1 >> 4) * y3)
            for n in range(nn):
                dyn, off = dy[n0 + n, b], np.int32(8 * isum[n0 + n, b])
                for r in range(64):
                    acc[n, r] += d[t, b, r] * dyn * np.float32(np.int32(si[n, r] - off))
        for n in range(nn):
            for r in range(nr):
                out[n0 + n, t * 64 + r] = acc[n, r]
