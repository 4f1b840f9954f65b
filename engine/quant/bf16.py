"""BF16 weights, kept as their 2-byte bits: resident memory = file bytes. A bfloat16 is the top half of a float32
(exact widening: the bits shifted up by 16), so they run F16's kernels (f16.py), which pick the bfloat16
conversion when handed the bits as int16."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.quant import f16

TYPE = GGMLQuantizationType.BF16
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    w: np.ndarray  # (rows, cols) uint16: bfloat16 bits, C-contiguous


def values(w: np.ndarray) -> np.ndarray:
    """(..., cols) uint16 bfloat16 bits -> float32 (exact)."""
    return (np.asarray(w).astype(np.uint32) << 16).view(np.float32)


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, 2 * cols) -> f32 (rows, cols)."""
    raw = np.asarray(raw)
    return values(raw.view(np.uint16).reshape(raw.shape[0], -1))


def repack(raw: np.ndarray) -> Packed:
    w = f16.bits(raw)
    return Packed(w.shape[0], w)


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return values(packed.w[np.asarray(ids, dtype=np.int64).reshape(-1)])


def concat(parts: list[Packed]) -> Packed:
    return Packed(sum(p.rows for p in parts), np.concatenate([p.w for p in parts]))


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    return f16.products(packed.w.view(np.int16), np.asarray(x).reshape(1, -1))[0]


def matmul(packed: Packed, x: np.ndarray) -> np.ndarray:
    return f16.products(packed.w.view(np.int16), x)
