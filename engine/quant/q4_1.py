"""Q4_1: blocks of 32 weights {fp16 d, fp16 m, u8 qs[16]}; w = d * q + m with q in 0..15.

In the file, byte j of qs holds element j in its low nibble and element j + 16 in its high nibble; at load we
re-pair them so that byte k holds elements 2k (low) and 2k + 1 (high): ggml's float lane l then reads exactly bytes
2l and 2l + 1. Dot product as llama.cpp's vec_dot_q4_1_q8_1 on x86 (Q8_1 activations), with its float summation
order (see _tile).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import fma32, hsum8
from engine.quant import _tiles
from engine.quant.activations import quantize_q8

TYPE = GGMLQuantizationType.Q4_1
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 16, 64) u8  | row-major fields: (rows, nb, 16); byte k = elements 2k | 2k+1
    d: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)
    m: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 20)
    q = np.concatenate([b[..., 4:] & 15, b[..., 4:] >> 4], axis=-1)       # (rows, nb, 32) element order
    return Packed(b.shape[0], q[..., 0::2] | (q[..., 1::2] << 4), _tiles.f16(b[..., 0:2]), _tiles.f16(b[..., 2:4]))


def _values(f: Packed) -> np.ndarray:
    q = np.stack([f.qs & 15, f.qs >> 4], axis=-1).reshape(*f.qs.shape[:-1], 32).astype(np.float32)
    return (f.d[..., None] * q + f.m[..., None]).reshape(f.rows, -1)       # same float ops as gguf-py


def repack(raw: np.ndarray) -> Packed:
    return _tiles.tile_rows(raw, _fields)


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, row_bytes) -> f32 (rows, cols), equal to gguf.quants.dequantize."""
    return _values(_fields(raw))


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return _values(_tiles.gather(packed, ids))


concat = _tiles.concat


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    return matmul(packed, x.reshape(1, -1))[0]


def matmul(packed: Packed, x: np.ndarray) -> np.ndarray:
    qy, dy, sy, _ = quantize_q8(np.ascontiguousarray(x, dtype=np.float32))
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(packed.qs, packed.d, packed.m, qy, dy, sy, out, numba.get_num_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, d, m, qy, dy, sy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 16, 64) u8, d m (n_tiles, nb, 64) f32; qy (T, cols) i8, dy sy (T, nb) f32.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((4, 8, 64), np.float32)  # (tokens of one micro-batch, ggml's 8 float lanes, rows)
        mins = np.empty((4, 64), np.float32)
        dd = np.empty(64, np.float32)
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, d, m, qy, dy, sy, t, out, acc, mins, dd)


@njit(cache=True, inline="always")
def _tile(qs, d, m, qy, dy, sy, t, out, acc, mins, dd):
    """Rows 64t..64t+63 for all tokens, 4 tokens at a time so each weight byte loaded is used 4 times.

    The float arithmetic is ggml's AVX2 vec_dot_q4_1_q8_1, lane for lane: float lane l of a row adds, once per
    block, fma(d·dy, integer dot of the block's elements 4l..4l+3); m·s accumulates beside the lanes; hsum8 at the
    end. No fastmath: that order is the point. Loop shapes matter (kernels.md §3.1): the row loop ``r`` is
    innermost with the literal trip count 64, one int32 target per statement — LLVM then emits zmm vpdpwssd.
    """
    nb = qs.shape[1]
    T = qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    for n0 in range(0, T, 4):
        nn = min(4, T - n0)
        acc[:nn] = 0.0
        mins[:nn] = 0.0
        for b in range(nb):
            for n in range(nn):
                dyn, syn = dy[n0 + n, b], sy[n0 + n, b]
                for r in range(64):
                    dd[r] = d[t, b, r] * dyn
                    mins[n, r] = fma32(m[t, b, r], syn, mins[n, r])
                for lane in range(8):
                    o = b * 32 + 4 * lane
                    y0, y1 = np.int32(qy[n0 + n, o]), np.int32(qy[n0 + n, o + 1])
                    y2, y3 = np.int32(qy[n0 + n, o + 2]), np.int32(qy[n0 + n, o + 3])
                    for r in range(64):
                        b0, b1 = np.int32(qs[t, b, 2 * lane, r]), np.int32(qs[t, b, 2 * lane + 1, r])
                        dot = np.int32((b0 & 15) * y0 + (b0 >> 4) * y1 + (b1 & 15) * y2 + (b1 >> 4) * y3)
                        acc[n, lane, r] = fma32(dd[r], np.float32(dot), acc[n, lane, r])
        for n in range(nn):
            a = acc[n]
            for r in range(nr):
                out[n0 + n, t * 64 + r] = hsum8(a[0, r], a[1, r], a[2, r], a[3, r],
                                                a[4, r], a[5, r], a[6, r], a[7, r]) + mins[n, r]
