"""Q5_1: blocks of 32 weights {fp16 d, fp16 m, u8 qh[4], u8 qs[16]}; w = d * q + m with q in 0..31.

Bit layout as Q5_0 (see q5_0.py). Dot product as llama.cpp's vec_dot_q5_1_q8_1: sumi = sum(q * yq) in int32,
acc += d * dy * sumi + m * sy (Q8_1 activations).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.q5_0 import five_bits
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q5_1
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 16, 64) u8  | row-major fields: (rows, nb, 16)
    qh: np.ndarray  # (n_tiles, nb, 64) i32     | (rows, nb): the u32 high-bit word, as int32
    d: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)
    m: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 24)
    qh = np.ascontiguousarray(b[..., 4:8]).view(np.int32)[..., 0]
    return Packed(b.shape[0], b[..., 8:], qh, _tiles.f16(b[..., 0:2]), _tiles.f16(b[..., 2:4]))


def _values(f: Packed) -> np.ndarray:
    q = five_bits(f.qs, f.qh).astype(np.float32)                         # (rows, nb, 32)
    return (f.d[..., None] * q + f.m[..., None]).reshape(f.rows, -1)     # same float ops as gguf-py


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
    qy, dy, sy, _ = quantize_q8(np.ascontiguousarray(x, dtype=np.float32))
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(packed.qs, packed.qh, packed.d, packed.m, qy, dy, sy, out, kernel_threads())
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matmul(qs, qh, d, m, qy, dy, sy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 16, 64) u8, qh (n_tiles, nb, 64) i32, d m (n_tiles, nb, 64) f32; qy, dy, sy as q4_1.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((4, 64), np.float32)  # (tokens, rows) of one micro-batch
        si = np.empty((4, 64), np.int32)
        hb = np.empty(64, np.int32)  # high-bit words, shifted right by 2 per byte pair
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, qh, d, m, qy, dy, sy, t, out, acc, si, hb)


@njit(fastmath=True, cache=True, inline="always")
def _tile(qs, qh, d, m, qy, dy, sy, t, out, acc, si, hb):
    """Rows 64t..64t+63 for all tokens, 4 tokens at a time (see q5_0._tile for the bit handling)."""
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
            for r in range(64):
                hb[r] = qh[t, b, r]
            for jj in range(half):
                j = 2 * jj
                o = b * 32 + j
                for n in range(nn):
                    y0 = np.int32(qy[n0 + n, o])
                    y1 = np.int32(qy[n0 + n, o + 16])
                    y2 = np.int32(qy[n0 + n, o + 1])
                    y3 = np.int32(qy[n0 + n, o + 17])
                    for r in range(64):
                        h = hb[r]
                        q0 = np.int32(qs[t, b, j, r])
                        q1 = np.int32(qs[t, b, j + 1, r])
                        v0 = np.int32((q0 & 15) + np.int32((h << 4) & 16))  # np.int32 everywhere,
                        v1 = np.int32((q0 >> 4) + np.int32((h >> 12) & 16))  # else this runs in 64-bit
                        v2 = np.int32((q1 & 15) + np.int32((h << 3) & 16))
                        v3 = np.int32((q1 >> 4) + np.int32((h >> 13) & 16))
                        si[n, r] = np.int32(si[n, r] + v0 * y0 + v1 * y1 + v2 * y2 + v3 * y3)
                for r in range(64):
                    hb[r] = np.int32(hb[r] >> 2)
            for n in range(nn):
                dyn, syn = dy[n0 + n, b], sy[n0 + n, b]
                for r in range(64):
                    acc[n, r] += d[t, b, r] * dyn * np.float32(si[n, r]) + m[t, b, r] * syn
        for n in range(nn):
            for r in range(nr):
                out[n0 + n, t * 64 + r] = acc[n, r]
