"""Q2_K: super-blocks of 256 weights {u8 scales[16], u8 qs[64], fp16 d, fp16 dmin}; 16 groups of 16.

Element e = 128n + 32k + 16g + l (n in 0..1, k in 0..3, g in 0..1, l in 0..15) is
q = qs[32n + 16g + l] >> 2k & 3 in group 8n + 2k + g, whose byte scales[group] holds a 4-bit scale (low
nibble) and a 4-bit minimum (high nibble).
w = d * (sc & 15) * q - dmin * (sc >> 4).

Dot product as llama.cpp's vec_dot_q2_K_q8_K: isum = sum_g (sc_g & 15) * sum(q * yq),
summ = sum_g (sc_g >> 4) * bsums[g]; acc += d * dy * isum - dmin * dy * summ.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.q8_k import i32, mad2, quantize_q8k
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q2_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    scales: np.ndarray  # (n_tiles, nb, 16, 64) u8  | row-major fields: (rows, nb, 16) min << 4 | scale
    qs: np.ndarray      # (n_tiles, nb, 64, 64) u8  | (rows, nb, 64) 2-bit quads
    d: np.ndarray       # (n_tiles, nb, 64) f32     | (rows, nb)
    dmin: np.ndarray    # (n_tiles, nb, 64) f32     | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 84)
    return Packed(b.shape[0], b[..., 0:16], b[..., 16:80], _tiles.f16(b[..., 80:82]),
                  _tiles.f16(b[..., 82:84]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    q = (f.qs.reshape(rows, nb, 2, 1, 32) >> shifts) & 3                  # (.., n, k, 16g + l)
    q = q.reshape(rows, nb, 16, 16).astype(np.float32)                    # group 8n + 2k + g
    dl = (f.d[..., None] * (f.scales & 15).astype(np.float32))[..., None]  # (rows, nb, 16, 1)
    ml = (f.dmin[..., None] * (f.scales >> 4).astype(np.float32))[..., None]
    return (dl * q - ml).reshape(rows, -1)                                # same float ops as gguf-py


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
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(*packed[1:], np.ascontiguousarray(x, dtype=np.float32), out, kernel_threads())
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matmul(scales, qs, d, dmin, x, out, n_threads):
    """out (T, rows) = W x^T; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((x.shape[0], 64), np.float32)  # (tokens, rows of the tile)
        si = np.empty((6, 64), np.int32)               # four group sums, then isum and summ
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(scales, qs, d, dmin, qy, dy, bsums, t, out, acc, si)


@njit(fastmath=True, cache=True, inline="always")
def _tile(scales, qs, d, dmin, qy, dy, bsums, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens; one super-block's weights (5 KiB) stay in L1 across the tokens."""
    nb, T = qs.shape[1], qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    acc[:] = 0.0
    for b in range(nb):
        for n in range(T):
            _block(scales, qs, t, b, qy[n], bsums[n], si)
            dyn = dy[n, b]
            for r in range(64):
                acc[n, r] += d[t, b, r] * dyn * np.float32(si[4, r]) - dmin[t, b, r] * dyn * np.float32(si[5, r])
    for n in range(T):
        for r in range(nr):
            out[n, t * 64 + r] = acc[n, r]


@njit(fastmath=True, cache=True, inline="always")
def _block(scales, qs, t, b, qy, bsums, si):
    """si[4] = isum, si[5] = summ of super-block b, tile t, one token (loop shapes: see q4_k._block).

    One pass reads qs byte p (elements 128n + 32k + 16g + l for k = 0..3) and feeds the four groups
    8n + 2k + g; two consecutive l per step so each int32 update is a pair of 16-bit products.
    """
    m3, lo, s2, s4, s6 = i32(3), i32(15), i32(2), i32(4), i32(6)
    si[4:6, :] = 0
    for n in range(2):
        for g in range(2):
            si[0:4, :] = 0
            for jj in range(8):
                j = 32 * n + 16 * g + 2 * jj            # qs byte
                o = b * 256 + 128 * n + 16 * g + 2 * jj
                y0, y1, y2, y3 = i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 32]), i32(qy[o + 33])
                y4, y5, y6, y7 = i32(qy[o + 64]), i32(qy[o + 65]), i32(qy[o + 96]), i32(qy[o + 97])
                for r in range(64):
                    p0, p1 = i32(qs[t, b, j, r]), i32(qs[t, b, j + 1, r])
                    si[0, r] = mad2(si[0, r], i32(p0 & m3), y0, i32(p1 & m3), y1)
                    si[1, r] = mad2(si[1, r], i32(i32(p0 >> s2) & m3), y2, i32(i32(p1 >> s2) & m3), y3)
                    si[2, r] = mad2(si[2, r], i32(i32(p0 >> s4) & m3), y4, i32(i32(p1 >> s4) & m3), y5)
                    si[3, r] = mad2(si[3, r], i32(p0 >> s6), y6, i32(p1 >> s6), y7)
            for k in range(4):
                grp = 8 * n + 2 * k + g
                bs = i32(bsums[b * 16 + grp])
                for r in range(64):
                    v = i32(scales[t, b, grp, r])
                    si[4, r] = i32(si[4, r] + i32(v & lo) * si[k, r])
                    si[5, r] = i32(si[5, r] + i32(v >> s4) * bs)
