"""Q6_K: super-blocks of 256 weights {u8 ql[128], u8 qh[64], i8 scales[16], fp16 d}; 16 groups of 16.

For half h (elements 128h..128h+127) and l = 0..31, with a = ql[64h + l], b = ql[64h + 32 + l], c = qh[32h + l]:
element 128h + l      = (a & 15) | (c & 3) << 4,        element 128h + 32 + l = (b & 15) | (c >> 2 & 3) << 4,
element 128h + 64 + l = (a >> 4) | (c >> 4 & 3) << 4,   element 128h + 96 + l = (b >> 4) | (c >> 6) << 4.
w = d * scales[e // 16] * (q - 32) with q in 0..63.

Dot product as llama.cpp's vec_dot_q6_K_q8_K (Q8_K activations), with the -32 taken out of the inner loop
(ggml's AVX2 version also multiplies the unsigned q and subtracts 32 * yq):
isum = sum_g sc_g * (sum(q * yq) - 32 * bsums[g]); acc += d * dy * isum.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.q8_k import i32, mad2, quantize_q8k

TYPE = GGMLQuantizationType.Q6_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    ql: np.ndarray  # (n_tiles, nb, 128, 64) u8  | row-major fields: (rows, nb, 128) low nibbles
    qh: np.ndarray  # (n_tiles, nb, 64, 64) u8   | (rows, nb, 64) high 2-bit pairs
    sc: np.ndarray  # (n_tiles, nb, 16, 64) i8   | (rows, nb, 16) group scales
    d: np.ndarray   # (n_tiles, nb, 64) f32      | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 210)
    return Packed(b.shape[0], b[..., 0:128], b[..., 128:192], b[..., 192:208].view(np.int8),
                  _tiles.f16(b[..., 208:210]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    ql = f.ql.reshape(rows, nb, 2, 1, 64)                                 # (.., half, nibble, 64)
    ql = np.concatenate([ql & 15, ql >> 4], axis=3)                       # elements 128h + 64k + i
    qh = f.qh.reshape(rows, nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    q = ql.reshape(rows, nb, 2, 4, 32) | ((qh & 3) << 4)                  # (.., half, 32-run, 32)
    q = (q.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(rows, nb, 16, 16)
    dl = (f.d[..., None] * f.sc.astype(np.float32))[..., None]            # (rows, nb, 16, 1)
    return (dl * q).reshape(rows, -1)                                     # same float ops as gguf-py


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
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(*packed[1:], np.ascontiguousarray(x, dtype=np.float32), out, numba.get_num_threads())
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matmul(ql, qh, sc, d, x, out, n_threads):
    """out (T, rows) = W x^T; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = ql.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((x.shape[0], 64), np.float32)  # (tokens, rows of the tile)
        si = np.empty((5, 64), np.int32)               # four group sums, then the block sum isum
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(ql, qh, sc, d, qy, dy, bsums, t, out, acc, si)


@njit(fastmath=True, cache=True, inline="always")
def _tile(ql, qh, sc, d, qy, dy, bsums, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens; one super-block's weights (12 KiB) stay in L1 across the tokens."""
    nb, T = ql.shape[1], qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    acc[:] = 0.0
    for b in range(nb):
        for n in range(T):
            _block(ql, qh, sc, t, b, qy[n], bsums[n], si)
            dyn = dy[n, b]
            for r in range(64):
                acc[n, r] += d[t, b, r] * dyn * np.float32(si[4, r])
    for n in range(T):
        for r in range(nr):
            out[n, t * 64 + r] = acc[n, r]


@njit(fastmath=True, cache=True, inline="always")
def _block(ql, qh, sc, t, b, qy, bsums, si):
    """si[4] = isum of super-block b for the 64 rows of tile t and one token (see q4_k._block on loop shapes).

    One pass over (half h, 16-run i) reads ql bytes a, b and qh byte c and feeds the four groups
    8h + i + {0, 2, 4, 6}; two consecutive l per step so each int32 update is a pair of 16-bit products.
    """
    lo, hi, s2, s4 = i32(15), i32(48), i32(2), i32(4)
    si[4, :] = 0
    for h in range(2):
        for i in range(2):
            si[0:4, :] = 0
            for jj in range(8):
                la = 64 * h + 16 * i + 2 * jj           # ql byte of element 128h + 16i + 2jj
                lc = 32 * h + 16 * i + 2 * jj           # qh byte
                o = b * 256 + 128 * h + 16 * i + 2 * jj
                y0, y1, y2, y3 = i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 32]), i32(qy[o + 33])
                y4, y5, y6, y7 = i32(qy[o + 64]), i32(qy[o + 65]), i32(qy[o + 96]), i32(qy[o + 97])
                for r in range(64):
                    a0, a1 = i32(ql[t, b, la, r]), i32(ql[t, b, la + 1, r])
                    b0, b1 = i32(ql[t, b, la + 32, r]), i32(ql[t, b, la + 33, r])
                    c0, c1 = i32(qh[t, b, lc, r]), i32(qh[t, b, lc + 1, r])
                    # bits 2k, 2k+1 of c are bits 4, 5 of the 6-bit value of the k-th element
                    si[0, r] = mad2(si[0, r], i32(a0 & lo) | i32(i32(c0 << s4) & hi), y0,
                                    i32(a1 & lo) | i32(i32(c1 << s4) & hi), y1)
                    si[1, r] = mad2(si[1, r], i32(b0 & lo) | i32(i32(c0 << s2) & hi), y2,
                                    i32(b1 & lo) | i32(i32(c1 << s2) & hi), y3)
                    si[2, r] = mad2(si[2, r], i32(a0 >> s4) | i32(c0 & hi), y4, i32(a1 >> s4) | i32(c1 & hi), y5)
                    si[3, r] = mad2(si[3, r], i32(b0 >> s4) | i32(i32(c0 >> s2) & hi), y6,
                                    i32(b1 >> s4) | i32(i32(c1 >> s2) & hi), y7)
            for k in range(4):
                g = 8 * h + i + 2 * k                   # group of elements 128h + 32k + 16i ..
                off = i32(32 * bsums[b * 16 + g])
                for r in range(64):
                    si[4, r] = i32(si[4, r] + i32(sc[t, b, g, r]) * i32(si[k, r] - off))
