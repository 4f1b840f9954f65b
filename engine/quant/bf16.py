"""BF16 weights: widened to float32 at load (exact: the bf16 bits are the top half of the f32 bits)."""

from __future__ import annotations

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.quant import f32

TYPE = GGMLQuantizationType.BF16
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]
Packed = f32.Packed


def dequantize(raw: np.ndarray) -> np.ndarray:
    """uint8 (rows, 2 * cols) -> f32 (rows, cols)."""
    raw = np.asarray(raw)
    bits = raw.view(np.uint16).reshape(raw.shape[0], -1).astype(np.uint32) << 16
    return bits.view(np.float32)


def repack(raw: np.ndarray) -> Packed:
    return f32.from_float(dequantize(raw))


take_rows = f32.take_rows
concat = f32.concat
matvec = f32.matvec
matmul = f32.matmul
