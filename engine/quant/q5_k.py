"""Q5_K: super-blocks of 256 weights {fp16 d, fp16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]}.

As Q4_K (8 sub-blocks of 32, 6-bit scales and minimums, ``q4_k.scale_min``) plus a fifth bit: element l
of sub-block 2c takes bit 2c of qh[l], element l of sub-block 2c+1 bit 2c+1.
w = d * sc_j * q - dmin * m_j with q in 0..31.

Dot product as llama.cpp's vec_dot_q5_K_q8_K: isum = sum_j sc_j * sum(q * yq),
summ = sum_j m_j * (bsums[2j] + bsums[2j+1]); acc += d * dy * isum - dmin * dy * summ.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.q4_k import scale_min
from engine.quant.q8_k import i32, mad2, quantize_q8k
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q5_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray    # (n_tiles, nb, 128, 64) u8  | row-major fields: (rows, nb, 128) low nibbles
    qh: np.ndarray    # (n_tiles, nb, 32, 64) u8   | (rows, nb, 32) fifth bits
    sc: np.ndarray    # (n_tiles, nb, 8, 64) u8    | (rows, nb, 8) sub-block scales 0..63
    m: np.ndarray     # (n_tiles, nb, 8, 64) u8    | (rows, nb, 8) sub-block minimums 0..63
    d: np.ndarray     # (n_tiles, nb, 64) f32      | (rows, nb)
    dmin: np.ndarray  # (n_tiles, nb, 64) f32      | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 176)
    sc, m = scale_min(b[..., 4:16])
    return Packed(b.shape[0], b[..., 48:], b[..., 16:48], sc, m, _tiles.f16(b[..., 0:2]),
                  _tiles.f16(b[..., 2:4]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    qs = f.qs.reshape(rows, nb, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=3).reshape(rows, nb, 8, 32)
    hbit = (f.qh.reshape(rows, nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(8, 1)) & 1  # (.., 8, 32)
    q = (q | (hbit << 4)).astype(np.float32)
    dl = (f.d[..., None] * f.sc.astype(np.float32))[..., None]            # (rows, nb, 8, 1)
    ml = (f.dmin[..., None] * f.m.astype(np.float32))[..., None]
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
def _matmul(qs, qh, sc, m, d, dmin, x, out, n_threads):
    """out (T, rows) = W x^T; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((x.shape[0], 64), np.float32)  # (tokens, rows of the tile)
        si = np.empty((4, 64), np.int32)               # sub-block sums s0, s1; block sums isum, summ
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, qh, sc, m, d, dmin, qy, dy, bsums, t, out, acc, si)


@njit(fastmath=True, cache=True, inline="always")
def _tile(qs, qh, sc, m, d, dmin, qy, dy, bsums, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens; one super-block's weights (10 KiB) stay in L1 across the tokens."""
    nb, T = qs.shape[1], qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    acc[:] = 0.0
    for b in range(nb):
        for n in range(T):
            _block(qs, qh, sc, m, t, b, qy[n], bsums[n], si)
            dyn = dy[n, b]
            for r in range(64):
                acc[n, r] += d[t, b, r] * dyn * np.float32(si[2, r]) - dmin[t, b, r] * dyn * np.float32(si[3, r])
    for n in range(T):
        for r in range(nr):
            out[n, t * 64 + r] = acc[n, r]


@njit(fastmath=True, cache=True, inline="always")
def _block(qs, qh, sc, m, t, b, qy, bsums, si):
    """si[2] = isum, si[3] = summ of super-block b, tile t, one token (loop shapes: see q4_k._block).

    The four 64-element chunks are separate inlined calls so that the qh shift counts are constants: a
    loop-dependent shift count keeps LLVM in 64-bit lanes.
    """
    si[2:4, :] = 0
    _chunk(qs, qh, sc, m, t, b, qy, bsums, si, 0)
    _chunk(qs, qh, sc, m, t, b, qy, bsums, si, 1)
    _chunk(qs, qh, sc, m, t, b, qy, bsums, si, 2)
    _chunk(qs, qh, sc, m, t, b, qy, bsums, si, 3)


@njit(fastmath=True, cache=True, inline="always")
def _chunk(qs, qh, sc, m, t, b, qy, bsums, si, c):
    """Sub-blocks 2c and 2c+1 (qs bytes 32c..32c+31) of super-block b added to si[2], si[3].

    Their fifth bits are bits 2c and 2c+1 of qh[l]; shifted by 4 - 2c and 3 - 2c they land on bit 4 (16).
    """
    lo, b4, sh = i32(15), i32(16), i32(4)
    s_lo, s_hi = i32(4 - 2 * c), i32(3 - 2 * c)
    si[0:2, :] = 0
    for jj in range(16):
        j = 2 * jj                                    # element j, j+1 of sub-blocks 2c and 2c+1
        o = b * 256 + 64 * c + j
        y0, y1, z0, z1 = i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 32]), i32(qy[o + 33])
        for r in range(64):
            q0, q1 = i32(qs[t, b, 32 * c + j, r]), i32(qs[t, b, 32 * c + j + 1, r])
            h0, h1 = i32(qh[t, b, j, r]), i32(qh[t, b, j + 1, r])
            si[0, r] = mad2(si[0, r], i32(q0 & lo) | i32(_shl(h0, s_lo) & b4), y0,
                            i32(q1 & lo) | i32(_shl(h1, s_lo) & b4), y1)
            si[1, r] = mad2(si[1, r], i32(q0 >> sh) | i32(_shl(h0, s_hi) & b4), z0,
                            i32(q1 >> sh) | i32(_shl(h1, s_hi) & b4), z1)
    g = b * 16 + 4 * c
    bs0, bs1 = i32(bsums[g] + bsums[g + 1]), i32(bsums[g + 2] + bsums[g + 3])
    for r in range(64):
        si[2, r] = mad2(si[2, r], sc[t, b, 2 * c, r], si[0, r], sc[t, b, 2 * c + 1, r], si[1, r])
        si[3, r] = mad2(si[3, r], m[t, b, 2 * c, r], bs0, m[t, b, 2 * c + 1, r], bs1)


@njit(cache=True, inline="always")
def _shl(v, s):
    """v << s, or v >> -s for a negative s (int32; s is a constant after inlining)."""
    return i32(v << s) if s >= 0 else i32(v >> -s)
