"""Q4_1: blocks of 32 weights {fp16 d, fp16 m, u8 qs[16]}; w = d * q + m with q in 0..15.

Byte j of qs holds element j in its low nibble and element j + 16 in its high nibble; we keep the file's bytes
as four uint32 words per row and block, so word w holds ggml's float lane w (elements 4w..4w+3, low nibbles) and
lane w + 4 (elements 16 + 4w.., high nibbles): one vpdpbusd each on the low / high nibbles. Dot product as
llama.cpp's vec_dot_q4_1_q8_1 on x86 (Q8_1 activations), with its float summation order (see _group); the
whole loop over a row group's blocks is one LLVM IR intrinsic (engine.quant.vnni.rows_q4_1) that keeps the lane
sums in registers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.vnni import rows_q4_1, unspill
from engine.threads import kernel_threads

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
    _matmul(packed.qs, packed.d, packed.m, qy, dy, sy, out, kernel_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, d, m, qy, dy, sy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of work units:
    32 rows for a lone token (_lone), else 16 rows (_group).

    qs (n_tiles, nb, 4, 64) u32, d m (n_tiles, nb, 64) u16 (fp16 bits); qy (T, cols) i8, dy sy (T, nb) f32.
    """
    n_tokens, rows = out.shape
    span = 32 if n_tokens == 1 else 16
    n_units = -(-rows // span)
    n_chunks = min(n_threads, n_units)
    flat = (qs.reshape(-1), d.reshape(-1), m.reshape(-1), qy.view(np.int32).reshape(-1), dy.reshape(-1),
            sy.reshape(-1), out.reshape(-1))
    for c in prange(n_chunks):
        spare = np.empty(32, np.float32)        # the sums of a unit cut short by the last row
        for u in range(c * n_units // n_chunks, (c + 1) * n_units // n_chunks):
            if n_tokens == 1:
                _lone(flat, qs.shape[1], u, rows, spare)
            else:
                _group(flat, qs.shape[1], u, n_tokens, rows, spare)


@njit(cache=True, inline="always")
def _lone(flat, nb, u, rows, spare):
    """Rows 32u..32u+31 of a lone token (a decode step), two 16-row groups per pass so that each of the weight
    lines it reads is used whole, the same rows of the next tile prefetched; the float order as in _group."""
    words, d, m, y_words, dy, sy, out = flat
    r0, nbn = u * 32, np.int64(nb)
    w_at, s_at = np.int64(u // 2 * nb * 256 + r0 % 64), np.int64(u // 2 * nb * 64 + r0 % 64)
    if rows - r0 >= 32:
        rows_q4_1(words, w_at, d, m, s_at, y_words, dy, sy, np.int64(0), nbn, 2, 1, 1, out, np.int64(r0), np.int64(0))
    else:
        rows_q4_1(words, w_at, d, m, s_at, y_words, dy, sy, np.int64(0), nbn, 2, 1, 0, spare, np.int64(0),
                  np.int64(0))
        unspill(out, spare, r0, rows, 1, 32, rows - r0)


@njit(cache=True, inline="always")
def _group(flat, nb, g, n_tokens, rows, spare):
    """Rows 16g..16g+15 for every token, two at a time so that they share each weight load and nibble split;
    the first pass prefetches the same rows of the next tile (engine.quant.vnni.rows_q4_1 says why).

    The float arithmetic is ggml's AVX2 vec_dot_q4_1_q8_1, lane for lane: float lane l of a row adds, once per
    block, fma(d·dy, integer dot of the block's elements 4l..4l+3); m·s accumulates beside the lanes (fma);
    hsum8 at the end. No fastmath: that order is the point.
    """
    words, d, m, y_words, dy, sy, out = flat
    r0, nbn = g * 16, np.int64(nb)
    w_at, s_at = np.int64(g // 4 * nb * 256 + r0 % 64), np.int64(g // 4 * nb * 64 + r0 % 64)
    whole = rows - r0 >= 16
    target, o_stride = (out, np.int64(rows)) if whole else (spare, np.int64(16))
    for n in range(0, n_tokens, 2):
        o_at = np.int64(n * rows + r0) if whole else np.int64(0)
        if n + 1 < n_tokens and n == 0:
            rows_q4_1(words, w_at, d, m, s_at, y_words, dy, sy, np.int64(n), nbn, 1, 2, 1, target, o_at, o_stride)
        elif n + 1 < n_tokens:
            rows_q4_1(words, w_at, d, m, s_at, y_words, dy, sy, np.int64(n), nbn, 1, 2, 0, target, o_at, o_stride)
        else:
            rows_q4_1(words, w_at, d, m, s_at, y_words, dy, sy, np.int64(n), nbn, 1, 1, 0, target, o_at, o_stride)
        if not whole:
            unspill(out, spare, n * rows + r0, rows, min(2, n_tokens - n), 16, rows - r0)
