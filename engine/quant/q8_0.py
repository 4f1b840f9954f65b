"""Q8_0: blocks of 32 weights {fp16 d, i8 qs[32]}; w = d * q. Also the tied embedding / output head.

Dot product as llama.cpp's vec_dot_q8_0_q8_0 on x86, in its float order (see _group). We store u = q + 128
(unsigned) and compute sumi = sum(u * yq) - 128 * sum(yq): LLVM only turns the product into 16-bit multiply-adds
(vpmaddwd / vpdpwssd) when one factor is known non-negative; signed bytes give vpmulld, half the speed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.vnni import rows_q8_0, unspill
from engine.threads import kernel_threads

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
    _matmul(packed.qs, packed.d, qy, dy, out, kernel_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, d, qy, dy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of work units:
    32 rows for a lone token (_lone), else 16 rows (_group).

    qs (n_tiles, nb, 8, 64) u32, d (n_tiles, nb, 64) u16 (fp16 bits); qy (T, cols) i8, dy (T, nb) f32.
    """
    n_tokens, rows = out.shape
    span = 32 if n_tokens == 1 else 16
    n_units = -(-rows // span)
    n_chunks = min(n_threads, n_units)
    y_words = qy.view(np.int32).reshape(-1)                      # 4 activations per word
    flat = (qs.reshape(-1), d.reshape(-1), y_words, _starts(qy), dy.reshape(-1), out.reshape(-1))
    for c in prange(n_chunks):
        spare = np.empty(32, np.float32)        # the sums of a unit cut short by the last row
        for u in range(c * n_units // n_chunks, (c + 1) * n_units // n_chunks):
            if n_tokens == 1:
                _lone(flat, qs.shape[1], u, rows, spare)
            else:
                _group(flat, qs.shape[1], u, n_tokens, rows, spare)


@njit(cache=True)
def _starts(qy):
    """-128 · (sum of each activation word's 4 bytes) (T · cols / 4,) i32: what the dot of u = q + 128 subtracts."""
    flat = qy.reshape(-1)
    starts = np.empty(flat.size // 4, np.int32)
    for j in range(starts.size):
        starts[j] = -128 * (np.int32(flat[4 * j]) + np.int32(flat[4 * j + 1]) + np.int32(flat[4 * j + 2])
                            + np.int32(flat[4 * j + 3]))
    return starts


@njit(cache=True, inline="always")
def _lone(flat, nb, u, rows, spare):
    """Rows 32u..32u+31 of a lone token (a decode step), two 16-row groups per pass so that each of the weight
    lines it reads is used whole, the same rows of the next tile prefetched; the float order as in _group."""
    words, d, y_words, y_starts, dy, out = flat
    r0, nbn, zero = u * 32, np.int64(nb), np.int64(0)
    w_at, s_at = np.int64(u // 2 * nb * 512 + r0 % 64), np.int64(u // 2 * nb * 64 + r0 % 64)
    if rows - r0 >= 32:
        rows_q8_0(words, w_at, d, s_at, y_words, y_starts, dy, zero, nbn, 2, 1, 1, out, np.int64(r0), zero)
    else:
        rows_q8_0(words, w_at, d, s_at, y_words, y_starts, dy, zero, nbn, 2, 1, 0, spare, zero, zero)
        unspill(out, spare, r0, rows, 1, 32, rows - r0)


@njit(cache=True, inline="always")
def _group(flat, nb, g, n_tokens, rows, spare):
    """Rows 16g..16g+15 for every token, two at a time so that they share each weight load; the first pass
    prefetches the same rows of the next tile (engine.quant.vnni.rows_q4_1 says why).

    The float arithmetic is ggml's vec_dot_q8_0_q8_0 (and its tinyBLAS Q8_0 path, the same arithmetic), lane for
    lane: float lane l of a row adds, once per block, fma(d·dy, integer dot of the block's elements 4l..4l+3);
    hsum8 at the end. The integer dot of u = q + 128 subtracts 128 · (sum of the four y). No fastmath.
    """
    words, d, y_words, y_starts, dy, out = flat
    r0, nbn = g * 16, np.int64(nb)
    w_at, s_at = np.int64(g // 4 * nb * 512 + r0 % 64), np.int64(g // 4 * nb * 64 + r0 % 64)
    whole = rows - r0 >= 16
    target, o_stride = (out, np.int64(rows)) if whole else (spare, np.int64(16))
    for n in range(0, n_tokens, 2):
        o_at = np.int64(n * rows + r0) if whole else np.int64(0)
        if n + 1 < n_tokens and n == 0:
            rows_q8_0(words, w_at, d, s_at, y_words, y_starts, dy, np.int64(n), nbn, 1, 2, 1, target, o_at, o_stride)
        elif n + 1 < n_tokens:
            rows_q8_0(words, w_at, d, s_at, y_words, y_starts, dy, np.int64(n), nbn, 1, 2, 0, target, o_at, o_stride)
        else:
            rows_q8_0(words, w_at, d, s_at, y_words, y_starts, dy, np.int64(n), nbn, 1, 1, 0, target, o_at, o_stride)
        if not whole:
            unspill(out, spare, n * rows + r0, rows, min(2, n_tokens - n), 16, rows - r0)
