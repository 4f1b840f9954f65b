"""Q5_0: blocks of 32 weights {fp16 d, u8 qh[4], u8 qs[16]}; w = d * (q - 16) with q in 0..31.

The low 4 bits of element j are the low nibble of qs[j], of element j + 16 the high nibble of qs[j]; bit 4 of
element i is bit i of the little-endian u32 qh. We keep the file's bytes (5.5 bits per weight): qs as four uint32
words per row and block as Q4_1 does (word w: float lane w in its low nibbles, lane w + 4 in its high ones), qh as
one uint32 with its bits reordered (see _permute_bits), d as fp16 bits. The kernel puts the 5th bits back onto
each lane's four nibbles in registers (vnni.five_bit_lanes, vnni.block_fma5) and takes the 16 out in integers,
dot(q - 16, y) = dot(q, y) - 16 · sum(y): the integer block sums and the d · dy scaling of llama.cpp's
vec_dot_q5_0_q8_0, in its float order (see _tile).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import f16_to_f32, hsum8
from engine.quant import _tiles
from engine.quant.activations import quantize_q8
from engine.quant.vnni import block_fma5, five_bit_lanes, lane_fma
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q5_0
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    qs: np.ndarray  # (n_tiles, nb, 4, 64) u32 = the block's 16 qs bytes as 4 words  | row-major: (rows, nb, 4)
    qh: np.ndarray  # (n_tiles, nb, 64) u32: bit 8k + l = bit 4 of element 4l + k    | (rows, nb)
    d: np.ndarray   # (n_tiles, nb, 64) u16: fp16 bits                               | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 22)
    qh = _permute_bits(b[..., 2:6], (8, 4))                               # (rows, nb)
    words = np.ascontiguousarray(b[..., 6:]).view("<u4")                  # (rows, nb, 4)
    return Packed(b.shape[0], words, qh, _tiles.f16_bits(b[..., 0:2]))


def _permute_bits(qh: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(..., 4) u8 little-endian 32-bit words -> (...) u32 with bit i of the input, read as index (a, b) of
    ``shape``, moved to index (b, a): (8, 4) turns the file's bit 4l + k into bit 8k + l (byte k holds bit k of
    all 8 float lanes, so that one rotation right by l - 4 puts lane l's four on bits 4, 12, 20, 28, where the
    kernel wants them); (4, 8) undoes it."""
    bits = np.unpackbits(np.ascontiguousarray(qh), axis=-1, bitorder="little")   # (..., 32)
    moved = bits.reshape(*bits.shape[:-1], *shape).swapaxes(-1, -2).reshape(bits.shape)
    return np.packbits(moved, axis=-1, bitorder="little").view("<u4")[..., 0]


def five_bits(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """qs (..., 16) u8, qh (...) 32-bit ints -> the 5-bit values (..., 32) u8 in element order."""
    high = (qh[..., None].view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1  # (..., 32)
    return np.concatenate([qs & 15, qs >> 4], axis=-1) | (high.astype(np.uint8) << 4)


def _values(f: Packed) -> np.ndarray:
    qs = np.ascontiguousarray(f.qs).view(np.uint8)                        # (rows, nb, 16)
    qh = _permute_bits(np.ascontiguousarray(f.qh)[..., None].view(np.uint8), (4, 8))   # the file's qh
    q = five_bits(qs, qh).astype(np.int8) - np.int8(16)                    # (rows, nb, 32)
    d = _tiles.f16_values(f.d)[..., None]
    return (d * q.astype(np.float32)).reshape(f.rows, -1)                 # same float ops as gguf-py


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
    _matmul(packed.qs, packed.qh, packed.d, qy, dy, out, kernel_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(qs, qh, d, qy, dy, out, n_threads):
    """out (T, rows) = W x^T from the 8-bit blocks of x; each thread takes one contiguous range of tiles.

    qs (n_tiles, nb, 4, 64) u32, qh (n_tiles, nb, 64) u32, d (n_tiles, nb, 64) u16 (fp16 bits);
    qy (T, cols) i8, dy (T, nb) f32.
    """
    nt = qs.shape[0]
    n_chunks = min(n_threads, nt)
    y_words = qy.view(np.int32)                                  # (T, cols / 4): 4 activations per word
    for c in prange(n_chunks):
        acc = np.empty((8, 8, 64), np.float32)  # (tokens of a micro-batch, ggml's 8 float lanes, rows)
        dd = np.empty(64, np.float32)
        q5 = np.empty(8 * 64, np.uint32)        # one block's 5-bit weights, (lane, row) as lane_fma reads them
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(qs, qh, d, qy, y_words, dy, t, out, acc, dd, q5)


@njit(cache=True, inline="always")
def _tile(qs, qh, d, qy, y_words, dy, t, out, acc, dd, q5):
    """Rows 64t..64t+63 for every token, 8 tokens at a time so that a block's weights stay in L1 across them, in
    the float order of ggml's vec_dot_q5_0_q8_0: float lane l adds fma(d·dy, integer dot of block elements
    4l..4l+3) once per block, hsum8 at the end. Lane l's 5-bit bytes are the low (l < 4) or high nibbles of
    qs word l % 4 with bits 4l..4l+3 of qh on top, built once per block for a micro-batch (five_bit_lanes), in
    registers for a lone token (block_fma5); the integer dot of q subtracts 16 · (sum of the four y).
    No fastmath."""
    nb = qs.shape[1]
    nr = min(64, out.shape[1] - t * 64)
    words, highs, lanes = qs.reshape(-1), qh.reshape(-1), acc.reshape(-1)
    for n0 in range(0, qy.shape[0], 8):
        nn = min(8, qy.shape[0] - n0)
        acc[:nn] = 0.0
        for b in range(nb):
            h_at, w_at = np.int64((t * nb + b) * 64), np.int64((t * nb + b) * 4 * 64)
            if nn > 1:
                five_bit_lanes(words, w_at, highs, h_at, q5)
            for n in range(n0, n0 + nn):
                dyn = dy[n, b]
                for r in range(64):
                    dd[r] = f16_to_f32(d[t, b, r]) * dyn
                if nn == 1:
                    block_fma5(words, w_at, highs, h_at, y_words[n], np.int64(b * 8), dd, lanes, np.int64(0))
                    continue
                for lane in range(8):
                    o = b * 32 + 4 * lane
                    off = np.int32(16 * (np.int32(qy[n, o]) + np.int32(qy[n, o + 1]) + np.int32(qy[n, o + 2])
                                         + np.int32(qy[n, o + 3])))
                    acc_at = np.int64(((n - n0) * 8 + lane) * 64)
                    lane_fma(q5, np.int64(lane * 64), np.int32(-1), np.int32(0), y_words[n, b * 8 + lane], off, dd,
                             lanes, acc_at)
        for n in range(nn):
            a = acc[n]
            for r in range(nr):
                out[n0 + n, t * 64 + r] = hsum8(a[0, r], a[1, r], a[2, r], a[3, r], a[4, r], a[5, r], a[6, r], a[7, r])
