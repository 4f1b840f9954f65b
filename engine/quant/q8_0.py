"""Q8_0: blocks of 32 weights {fp16 d, i8 qs[32]}; w = d * q. Also the tied embedding / output head.

Dot product as llama.cpp's vec_dot_q8_0_q8_0 on x86, in its float order (see _tile). We store u = q + 128
(unsigned) and compute sumi = sum(u * yq) - 128 * sum(yq): LLVM only turns the product into 16-bit multiply-adds
(vpmaddwd / vpdpwssd) when one factor is known non-negative; signed bytes give vpmulld, half the speed.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import f16_to_f32, hsum8
from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.vnni import lane_fma

TYPE = GGMLQuantizationType.Q8_0
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 8, 64) u32: bytes q + 128 of elements 4l..4l+3  | row-major: (rows, nb, 8)
    d: np.ndarray   # (n_tiles, nb, 64) u16: fp16 bits  | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 34)
    u = np.ascontiguousarray(b[..., 2:] ^ np.uint8(0x80))                 # int8 q -> q + 128
    return Packed(b.shape[0], u.view("<u4"), _tiles.f16_bits(b[..., 0:2]))  # 4 bytes of one row per word


def _values(f: Packed) -> np.ndarray:
    q = (np.ascontiguousarray(f.qs).view(np.uint8) ^ np.uint8(0x80)).view(np.int8)   # (rows, nb, 32)
    d = _tiles.f16_values(f.d)[..., None]
    return (q.astype(np.float32) * d).reshape(f.rows, -1)                 # same float ops as gguf-py


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
    qy, dy, _, _ = quantize_q8(np.ascontiguousarray(x, dtype=np.float32))
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(packed.qs, packed.d, qy, dy, out, numba.get_num_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, d, qy, dy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 8, 64) u32, d (n_tiles, nb, 64) u16 (fp16 bits); qy (T, cols) i8, dy (T, nb) f32.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    y_words = qy.view(np.int32)                                  # (T, cols / 4): 4 activations per word
    for c in prange(n_chunks):
        acc = np.empty((8, 8, 64), np.float32)  # (tokens of a micro-batch, ggml's 8 float lanes, rows)
        dd = np.empty(64, np.float32)
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, d, qy, y_words, dy, t, out, acc, dd)


@njit(cache=True, inline="always")
def _tile(qs, d, qy, y_words, dy, t, out, acc, dd):
    """Rows 64t..64t+63 for every token, 8 tokens at a time so that a block's 2 KiB of weights stays in L1
    across them, in the float order of ggml's vec_dot_q8_0_q8_0 (and of its tinyBLAS Q8_0 path, the same
    arithmetic): float lane l adds fma(d·dy, integer dot of block elements 4l..4l+3) once per block, hsum8 at
    the end. The integer dot of u = q + 128 subtracts 128 · (sum of the four y). No fastmath."""
    nb = qs.shape[1]
    nr = min(64, out.shape[1] - t * 64)
    words, lanes = qs.reshape(-1), acc.reshape(-1)
    for n0 in range(0, qy.shape[0], 8):
        nn = min(8, qy.shape[0] - n0)
        acc[:nn] = 0.0
        for b in range(nb):
            for n in range(n0, n0 + nn):
                dyn = dy[n, b]
                for r in range(64):
                    dd[r] = f16_to_f32(d[t, b, r]) * dyn
                for lane in range(8):
                    o = b * 32 + 4 * lane
                    off = np.int32(128 * (np.int32(qy[n, o]) + np.int32(qy[n, o + 1]) + np.int32(qy[n, o + 2])
                                          + np.int32(qy[n, o + 3])))
                    w_at, acc_at = np.int64(((t * nb + b) * 8 + lane) * 64), np.int64(((n - n0) * 8 + lane) * 64)
                    lane_fma(words, w_at, np.int32(-1), np.int32(0), y_words[n, b * 8 + lane], off, dd, lanes, acc_at)
        for n in range(nn):
            a = acc[n]
            for r in range(nr):
                out[n0 + n, t * 64 + r] = hsum8(a[0, r], a[1, r], a[2, r], a[3, r], a[4, r], a[5, r], a[6, r], a[7, r])
