"""Q3_K: super-blocks of 256 weights {u8 hmask[32], u8 qs[64], u8 scales[12], fp16 d}; 16 groups of 16.

Element e = 128n + 32k + 16g + l (n in 0..1, k in 0..3, g in 0..1, l in 0..15) has the low bits
q2 = qs[32n + 16g + l] >> 2k & 3, the high bit hmask[16g + l] >> (4n + k) & 1, and the 6-bit scale
sc[8n + 2k + g] (``_scales``; signed, sc - 32). w = d * (sc - 32) * (q2 + 4 * hbit - 4).

Dot product as llama.cpp's vec_dot_q3_K_q8_K, with the -4 taken out of the inner loop:
u = q2 | hbit << 2 in 0..7, isum = sum_g (sc_g - 32) * (sum(u * yq) - 4 * bsums[g]); acc += d * dy * isum.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.q8_k import i32, mad2, quantize_q8k
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q3_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    hmask: np.ndarray  # (n_tiles, nb, 32, 64) u8  | row-major fields: (rows, nb, 32) high bits
    qs: np.ndarray     # (n_tiles, nb, 64, 64) u8  | (rows, nb, 64) 2-bit quads
    sc: np.ndarray     # (n_tiles, nb, 16, 64) i8  | (rows, nb, 16) group scales sc - 32 in -32..31
    d: np.ndarray      # (n_tiles, nb, 64) f32     | (rows, nb)


def _scales(s: np.ndarray) -> np.ndarray:
    """The 12 packed bytes (..., 12) u8 -> 16 signed 6-bit scales (..., 16) i8, minus 32.

    Low 4 bits: scale i < 8 in the low nibble of s[i], scale i >= 8 in the high nibble of s[i - 8];
    high 2 bits: bits 2(i // 4 % 4).. of s[8 + i % 4].
    """
    lo = np.concatenate([s[..., 0:8] & 15, s[..., 0:8] >> 4], axis=-1)   # (..., 16)
    shift = (2 * (np.arange(16) // 4)).astype(np.uint8)                    # 0,0,0,0,2,2,2,2,4,..,6
    hi = (s[..., 8 + np.arange(16) % 4] >> shift) & 3
    return ((lo | (hi << 4)).astype(np.int8) - np.int8(32)).astype(np.int8)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 110)
    return Packed(b.shape[0], b[..., 0:32], b[..., 32:96], _scales(b[..., 96:108]),
                  _tiles.f16(b[..., 108:110]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    q2 = (f.qs.reshape(rows, nb, 2, 1, 32) >> shifts) & 3                 # (.., n, k, 16g + l)
    bits = np.arange(8, dtype=np.uint8).reshape(8, 1)
    hbit = (f.hmask.reshape(rows, nb, 1, 32) >> bits) & 1                 # (.., 4n + k, 16g + l)
    q = q2.reshape(rows, nb, 8, 32).astype(np.int8) - ((hbit ^ 1) << 2).astype(np.int8)
    q = q.reshape(rows, nb, 16, 16).astype(np.float32)                    # group 8n + 2k + g
    dl = (f.d[..., None] * f.sc.astype(np.float32))[..., None]            # (rows, nb, 16, 1)
    return (dl * q).reshape(rows, -1)                                     # same float ops as gguf-py


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
def _matmul(hmask, qs, sc, d, x, out, n_threads):
    """out (T, rows) = W x^T; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((x.shape[0], 64), np.float32)  # (tokens, rows of the tile)
        si = np.empty((5, 64), np.int32)               # four group sums, then the block sum isum
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(hmask, qs, sc, d, qy, dy, bsums, t, out, acc, si)


@njit(fastmath=True, cache=True, inline="always")
def _tile(hmask, qs, sc, d, qy, dy, bsums, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens; one super-block's weights (7 KiB) stay in L1 across the tokens."""
    nb, T = qs.shape[1], qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    acc[:] = 0.0
    for b in range(nb):
        for n in range(T):
            si[4, :] = 0
            _half(hmask, qs, sc, t, b, qy[n], bsums[n], si, 0)
            _half(hmask, qs, sc, t, b, qy[n], bsums[n], si, 1)
            dyn = dy[n, b]
            for r in range(64):
                acc[n, r] += d[t, b, r] * dyn * np.float32(si[4, r])
    for n in range(T):
        for r in range(nr):
            out[n, t * 64 + r] = acc[n, r]


@njit(fastmath=True, cache=True, inline="always")
def _half(hmask, qs, sc, t, b, qy, bsums, si, n):
    """Elements 128n..128n+127 of super-block b added to si[4] (loop shapes: see q4_k._block).

    Called once per n so the hmask shift counts are constants: a loop-dependent shift count keeps LLVM in
    64-bit lanes. One pass reads qs byte p and hmask byte h and feeds the four groups 8n + 2k + g; the high
    bit 4n + k of h moves to bit 2 (value 4) of u = q2 | hbit << 2.
    """
    m3, m4, s2, s4, s6 = i32(3), i32(4), i32(2), i32(4), i32(6)
    h0, h1, h2, h3 = i32(4 * n - 2), i32(4 * n - 1), i32(4 * n), i32(4 * n + 1)   # right shifts of h
    for g in range(2):
        si[0:4, :] = 0
        for jj in range(8):
            j = 16 * g + 2 * jj                         # hmask byte; qs byte 32n + j
            o = b * 256 + 128 * n + j
            y0, y1, y2, y3 = i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 32]), i32(qy[o + 33])
            y4, y5, y6, y7 = i32(qy[o + 64]), i32(qy[o + 65]), i32(qy[o + 96]), i32(qy[o + 97])
            for r in range(64):
                p0, p1 = i32(qs[t, b, 32 * n + j, r]), i32(qs[t, b, 32 * n + j + 1, r])
                e0, e1 = i32(hmask[t, b, j, r]), i32(hmask[t, b, j + 1, r])
                si[0, r] = mad2(si[0, r], i32(p0 & m3) | i32(_shr(e0, h0) & m4), y0,
                                i32(p1 & m3) | i32(_shr(e1, h0) & m4), y1)
                si[1, r] = mad2(si[1, r], i32(i32(p0 >> s2) & m3) | i32(_shr(e0, h1) & m4), y2,
                                i32(i32(p1 >> s2) & m3) | i32(_shr(e1, h1) & m4), y3)
                si[2, r] = mad2(si[2, r], i32(i32(p0 >> s4) & m3) | i32(_shr(e0, h2) & m4), y4,
                                i32(i32(p1 >> s4) & m3) | i32(_shr(e1, h2) & m4), y5)
                si[3, r] = mad2(si[3, r], i32(p0 >> s6) | i32(_shr(e0, h3) & m4), y6,
                                i32(p1 >> s6) | i32(_shr(e1, h3) & m4), y7)
        for k in range(4):
            grp = 8 * n + 2 * k + g
            off = i32(4 * bsums[b * 16 + grp])
            for r in range(64):
                si[4, r] = i32(si[4, r] + i32(sc[t, b, grp, r]) * i32(si[k, r] - off))


@njit(cache=True, inline="always")
def _shr(v, s):
    """v >> s, or v << -s for a negative s (int32; s is a constant after inlining)."""
    return i32(v >> s) if s >= 0 else i32(v << -s)
