"""Q8_0: blocks of 32 weights {fp16 d, i8 qs[32]}; w = d * q. Also the tied embedding / output head.

Dot product as llama.cpp's vec_dot_q8_0_q8_0: per block sumi = sum(q * yq) in int32, acc += d * dy * sumi.
We store u = q + 128 (unsigned) and compute sumi = sum(u * yq) - 128 * sum(yq): LLVM only turns the product
into 16-bit multiply-adds (vpmaddwd / vpdpwssd) when one factor is known non-negative; signed bytes give
vpmulld, half the speed.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.activations import quantize_q8

TYPE = GGMLQuantizationType.Q8_0
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 32, 64) u8 = q + 128  | row-major fields: (rows, nb, 32)
    d: np.ndarray   # (n_tiles, nb, 64) f32     | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 34)
    return Packed(b.shape[0], b[..., 2:] ^ np.uint8(0x80), _tiles.f16(b[..., 0:2]))  # int8 q -> q + 128


def _values(f: Packed) -> np.ndarray:
    q = (f.qs ^ np.uint8(0x80)).view(np.int8)
    return (q.astype(np.float32) * f.d[..., None]).reshape(f.rows, -1)   # same float ops as gguf-py


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
    qy, dy, _, isum = quantize_q8(np.ascontiguousarray(x, dtype=np.float32))
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(packed.qs, packed.d, qy, dy, isum, out, numba.get_num_threads())
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matmul(qs, d, qy, dy, isum, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 32, 64) u8, d (n_tiles, nb, 64) f32; qy (T, cols) i8, dy (T, nb) f32, isum (T, nb) i32.
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
                for n in range(nn):
                    y0 = np.int32(qy[n0 + n, b * 32 + j])
                    y1 = np.int32(qy[n0 + n, b * 32 + j + 1])
                    for r in range(64):
                        si[n, r] = np.int32(si[n, r] + np.int32(qs[t, b, j, r]) * y0
                                            + np.int32(qs[t, b, j + 1, r]) * y1)
            for n in range(nn):
                dyn, off = dy[n0 + n, b], np.int32(128 * isum[n0 + n, b])
                for r in range(64):
                    acc[n, r] += d[t, b, r] * dyn * np.float32(np.int32(si[n, r] - off))
        for n in range(nn):
            for r in range(nr):
                out[n0 + n, t * 64 + r] = acc[n, r]
