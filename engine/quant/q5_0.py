"""Q5_0: blocks of 32 weights {fp16 d, u8 qh[4], u8 qs[16]}; w = d * (q - 16) with q in 0..31.

The low 4 bits of element j are the low nibble of qs[j], of element j + 16 the high nibble of qs[j]; bit 4 of
element i is bit i of the little-endian u32 qh. At load the blocks are widened to Q8_0 (d unchanged, q - 16 as
int8) and multiplied by the Q8_0 kernel: the integer block sums and the d · dy scaling are exactly llama.cpp's
vec_dot_q5_0_q8_0, while the 5th-bit unpacking leaves the hot loop (the Q8_0 kernel runs ~22 GMAC/s where the
5-bit one ran 12–14), for 8.5 instead of 5.5 bits per weight in memory."""

from __future__ import annotations

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.quant import _tiles, q8_0

TYPE = GGMLQuantizationType.Q5_0
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


Packed = q8_0.Packed


def _fields(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d f32 (rows, nb), qs u8 (rows, nb, 16), qh i32 (rows, nb)) of the raw blocks."""
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 22)
    qh = np.ascontiguousarray(b[..., 2:6]).view(np.int32)[..., 0]
    return _tiles.f16(b[..., 0:2]), b[..., 6:], qh


def five_bits(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """qs (..., 16) u8, qh (...) i32 -> the 5-bit values (..., 32) u8 in element order."""
    high = (qh[..., None].view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1  # (..., 32)
    return np.concatenate([qs & 15, qs >> 4], axis=-1) | (high.astype(np.uint8) << 4)


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, row_bytes) -> f32 (rows, cols), equal to gguf.quants.dequantize."""
    d, qs, qh = _fields(raw)
    q = five_bits(qs, qh).astype(np.int8) - np.int8(16)                   # (rows, nb, 32)
    return (d[..., None] * q.astype(np.float32)).reshape(d.shape[0], -1)  # same float ops as gguf-py


def as_q8_0_blocks(raw: np.ndarray) -> np.ndarray:
    """The same weights as Q8_0 bytes (rows, nb · 34): the fp16 d copied, q - 16 stored as int8. Exact."""
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 22)
    _, qs, qh = _fields(raw)
    q8 = (five_bits(qs, qh).astype(np.int8) - np.int8(16)).view(np.uint8)  # (rows, nb, 32)
    return np.concatenate([b[..., 0:2], q8], axis=-1).reshape(b.shape[0], -1)


def repack(raw: np.ndarray) -> Packed:
    return q8_0.repack(as_q8_0_blocks(raw))


take_rows = q8_0.take_rows
concat = q8_0.concat
matvec = q8_0.matvec
matmul = q8_0.matmul
