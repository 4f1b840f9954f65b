"""Q4_K: super-blocks of 256 weights {fp16 d, fp16 dmin, u8 scales[12], u8 qs[128]}; 8 sub-blocks of 32.

Sub-block j has a 6-bit scale sc_j and a 6-bit minimum m_j packed in ``scales`` (``scale_min``); byte
qs[32c + l] holds element l of sub-block 2c (low nibble) and of sub-block 2c+1 (high nibble).
w = d * sc_j * q - dmin * m_j with q in 0..15.

Dot product as llama.cpp computes it on x86, where it repacks Q4_K into 8-row interleaved blocks (Q8_K
activations): in int32, per pair c of sub-blocks, isum_c = sc_2c·Σ(q·yq) + sc_2c+1·Σ(q·yq) and
summ_c = m_2c·bsum_2c + m_2c+1·bsum_2c+1; then two float accumulators, acc and accm, each fed by fused
multiply-adds with d·dy and dmin·dy, and the result acc - accm. Its gemm (tokens in whole groups of four) adds
one fma per pair c, its gemv (the rest of a batch, and decode) one per super-block with the pairs summed in
int32 — so a token's bits depend on where it sits in its batch, and ``matmul`` takes ``grouped`` to say which
tokens llama.cpp would give to the gemm (engine.quant.gemm_groups).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import fma32
from engine.quant import _tiles
from engine.quant.q8_k import i32, mad2, quantize_q8k
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q4_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray    # (n_tiles, nb, 128, 64) u8  | row-major fields: (rows, nb, 128)
    sc: np.ndarray    # (n_tiles, nb, 8, 64) u8    | (rows, nb, 8) sub-block scales 0..63
    m: np.ndarray     # (n_tiles, nb, 8, 64) u8    | (rows, nb, 8) sub-block minimums 0..63
    d: np.ndarray     # (n_tiles, nb, 64) f32      | (rows, nb)
    dmin: np.ndarray  # (n_tiles, nb, 64) f32      | (rows, nb)


def scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed scale bytes of Q4_K / Q5_K (..., 12) u8 -> sc, m (..., 8) u8 (ggml get_scale_min_k4)."""
    lo, hi, mix = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = np.concatenate([lo & 63, (mix & 15) | ((lo >> 6) << 4)], axis=-1)
    m = np.concatenate([hi & 63, (mix >> 4) | ((hi >> 6) << 4)], axis=-1)
    return sc, m


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 144)
    sc, m = scale_min(b[..., 4:16])
    return Packed(b.shape[0], b[..., 16:], sc, m, _tiles.f16(b[..., 0:2]), _tiles.f16(b[..., 2:4]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    qs = f.qs.reshape(rows, nb, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=3).reshape(rows, nb, 8, 32).astype(np.float32)
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


GROUPED = True   # matmul takes the per-token gemm/gemv choice


def matmul(packed: Packed, x: np.ndarray, grouped: np.ndarray | None = None) -> np.ndarray:
    """x (T, cols) -> (T, rows); grouped (T,) bool: tokens llama.cpp's repacked gemm computes (default: none)."""
    grouped = np.zeros(x.shape[0], np.bool_) if grouped is None else np.asarray(grouped, np.bool_)
    out = np.empty((x.shape[0], packed.rows), np.float32)
    _matmul(*packed[1:], np.ascontiguousarray(x, dtype=np.float32), grouped, out, kernel_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, sc, m, d, dmin, x, grouped, out, n_threads):
    """out (T, rows) = W x^T; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((2, x.shape[0], 64), np.float32)  # (acc | accm, tokens, rows of the tile)
        si = np.empty((10, 64), np.int32)               # sub-block sums; isum_c, summ_c of the 4 pairs
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, sc, m, d, dmin, qy, dy, bsums, grouped, t, out, acc, si)


@njit(cache=True, inline="always")
def _tile(qs, sc, m, d, dmin, qy, dy, bsums, grouped, t, out, acc, si):
    """Rows 64t..64t+63 for all tokens; one super-block's weights (8 KiB) stay in L1 across the tokens.
    No fastmath: the float order is llama.cpp's (module docstring)."""
    nb, T = qs.shape[1], qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    acc[:] = 0.0
    for b in range(nb):
        for n in range(T):
            _block(qs, sc, m, t, b, qy[n], bsums[n], si)
            dyn = dy[n, b]
            if grouped[n]:
                for c in range(4):
                    for r in range(64):
                        acc[0, n, r] = fma32(np.float32(si[2 + c, r]), d[t, b, r] * dyn, acc[0, n, r])
                        acc[1, n, r] = fma32(np.float32(si[6 + c, r]), dmin[t, b, r] * dyn, acc[1, n, r])
            else:
                for r in range(64):
                    isum = i32(i32(si[2, r] + si[3, r]) + i32(si[4, r] + si[5, r]))
                    summ = i32(i32(si[6, r] + si[7, r]) + i32(si[8, r] + si[9, r]))
                    acc[0, n, r] = fma32(np.float32(isum), d[t, b, r] * dyn, acc[0, n, r])
                    acc[1, n, r] = fma32(np.float32(summ), dmin[t, b, r] * dyn, acc[1, n, r])
    for n in range(T):
        for r in range(nr):
            out[n, t * 64 + r] = acc[0, n, r] - acc[1, n, r]


@njit(cache=True, inline="always")
def _block(qs, sc, m, t, b, qy, bsums, si):
    """si[2 + c] = isum_c, si[6 + c] = summ_c of sub-block pair c of super-block b, for the 64 rows of tile t and
    one token (qy, bsums).

    Loop shapes matter (kernels.md §3.1): the lane loop ``r`` is innermost with the literal trip count 64 and
    every integer step is wrapped in i32 (masks and shift counts too: an int64 operand widens the whole loop),
    so LLVM emits zmm vpmovzxbd + vpmaddwd / vpdpwssd. Four bytes per pass cut the loads / stores of si.
    """
    lo, sh = i32(15), i32(4)
    for c in range(4):
        si[0:2, :] = 0                                # sub-blocks 2c (low nibbles) and 2c+1 (high nibbles)
        for jj in range(8):
            j = 32 * c + 4 * jj                       # qs byte; element j - 32c of both sub-blocks
            o = b * 256 + 64 * c + 4 * jj
            y0, y1, y2, y3 = i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 2]), i32(qy[o + 3])
            z0, z1, z2, z3 = i32(qy[o + 32]), i32(qy[o + 33]), i32(qy[o + 34]), i32(qy[o + 35])
            for r in range(64):
                q0, q1 = i32(qs[t, b, j, r]), i32(qs[t, b, j + 1, r])
                q2, q3 = i32(qs[t, b, j + 2, r]), i32(qs[t, b, j + 3, r])
                s0 = mad2(si[0, r], i32(q0 & lo), y0, i32(q1 & lo), y1)
                si[0, r] = mad2(s0, i32(q2 & lo), y2, i32(q3 & lo), y3)
                s1 = mad2(si[1, r], i32(q0 >> sh), z0, i32(q1 >> sh), z1)
                si[1, r] = mad2(s1, i32(q2 >> sh), z2, i32(q3 >> sh), z3)
        g = b * 16 + 4 * c
        bs0, bs1 = i32(bsums[g] + bsums[g + 1]), i32(bsums[g + 2] + bsums[g + 3])
        for r in range(64):
            si[2 + c, r] = mad2(i32(0), sc[t, b, 2 * c, r], si[0, r], sc[t, b, 2 * c + 1, r], si[1, r])
        for r in range(64):
            si[6 + c, r] = mad2(i32(0), m[t, b, 2 * c, r], bs0, m[t, b, 2 * c + 1, r], bs1)
