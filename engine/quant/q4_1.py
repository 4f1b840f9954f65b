"""Q4_1: blocks of 32 weights {fp16 d, fp16 m, u8 qs[16]}; w = d * q + m with q in 0..15.

Byte j of qs holds element j in its low nibble and element j + 16 in its high nibble; we keep the file's bytes
as four uint32 words per row and block, so word w holds ggml's float lane w (elements 4w..4w+3, low nibbles) and
lane w + 4 (elements 16 + 4w.., high nibbles): one masked vpdpbusd each (engine.quant.vnni). Dot product as
llama.cpp's vec_dot_q4_1_q8_1 on x86 (Q8_1 activations), with its float summation order (see _tile).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import f16_to_f32, fma32, hsum8
from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.vnni import lane_fma

TYPE = GGMLQuantizationType.Q4_1
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 4, 64) u32 = the block's 16 bytes as 4 words  | row-major: (rows, nb, 4)
    d: np.ndarray   # (n_tiles, nb, 64) u16: fp16 bits  | (rows, nb)
    m: np.ndarray   # (n_tiles, nb, 64) u16: fp16 bits  | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 20)
    words = np.ascontiguousarray(b[..., 4:]).view("<u4")                  # (rows, nb, 4)
    return Packed(b.shape[0], words, _tiles.f16_bits(b[..., 0:2]), _tiles.f16_bits(b[..., 2:4]))


def _values(f: Packed) -> np.ndarray:
    qs = np.ascontiguousarray(f.qs).view(np.uint8)                        # (rows, nb, 16)
    q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.float32)    # (rows, nb, 32)
    d, m = _tiles.f16_values(f.d)[..., None], _tiles.f16_values(f.m)[..., None]
    return (d * q + m).reshape(f.rows, -1)                                 # same float ops as gguf-py


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
    _matmul(packed.qs, packed.d, packed.m, qy, dy, sy, out, numba.get_num_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, d, m, qy, dy, sy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 4, 64) u32, d m (n_tiles, nb, 64) u16 (fp16 bits); qy (T, cols) i8, dy sy (T, nb) f32.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    y_words = qy.view(np.int32)                                  # (T, cols / 4): 4 activations per word
    for c in prange(n_chunks):
        acc = np.empty((8, 8, 64), np.float32)  # (tokens of a micro-batch, ggml's 8 float lanes, rows)
        mins = np.empty((8, 64), np.float32)
        dd = np.empty(64, np.float32)
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, d, m, qy, y_words, dy, sy, t, out, acc, mins, dd)


@njit(cache=True, inline="always")
def _tile(qs, d, m, qy, y_words, dy, sy, t, out, acc, mins, dd):
    """Rows 64t..64t+63 for all tokens, 8 at a time so that a block's weights stay in L1 across them.

    The float arithmetic is ggml's AVX2 vec_dot_q4_1_q8_1, lane for lane: float lane l of a row adds, once per
    block, fma(d·dy, integer dot of the block's elements 4l..4l+3); m·s accumulates beside the lanes (fma);
    hsum8 at the end. No fastmath: that order is the point.
    """
    nb = qs.shape[1]
    nr = min(64, out.shape[1] - t * 64)
    words, lanes, nibbles = qs.reshape(-1), acc.reshape(-1), np.int32(0x0F0F0F0F)
    for n0 in range(0, qy.shape[0], 8):
        nn = min(8, qy.shape[0] - n0)
        acc[:nn] = 0.0
        mins[:nn] = 0.0
        for b in range(nb):
            for n in range(n0, n0 + nn):
                dyn, syn = dy[n, b], sy[n, b]
                for r in range(64):
                    dd[r] = f16_to_f32(d[t, b, r]) * dyn
                    mins[n - n0, r] = fma32(f16_to_f32(m[t, b, r]), syn, mins[n - n0, r])
                for lane in range(8):                   # lanes 0..3: low nibbles of word l; 4..7: high of l - 4
                    w_at = np.int64(((t * nb + b) * 4 + lane % 4) * 64)
                    shift, acc_at = np.int32(4 * (lane // 4)), np.int64(((n - n0) * 8 + lane) * 64)
                    lane_fma(words, w_at, nibbles, shift, y_words[n, b * 8 + lane], np.int32(0), dd, lanes, acc_at)
        for n in range(nn):
            a = acc[n]
            for r in range(nr):
                out[n0 + n, t * 64 + r] = hsum8(a[0, r], a[1, r], a[2, r], a[3, r],
                                                a[4, r], a[5, r], a[6, r], a[7, r]) + mins[n, r]
