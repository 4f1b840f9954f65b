"""F32 weights: kept as a plain (rows, cols) float32 matrix (F16 and BF16 keep their 2-byte bits: f16.py).

One token (decode) goes through a Numba kernel, so a decode step never wakes OpenBLAS's own thread pool
while Numba's threads run (the two spinning against each other cost milliseconds per call, kernels.md §3.5);
batches (prefill) use NumPy's BLAS, whose threads ``set_threads`` does not control (OPENBLAS_NUM_THREADS).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.F32
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    w: np.ndarray  # (rows, cols) f32, C-contiguous


def dequantize(raw: np.ndarray) -> np.ndarray:
    """uint8 (rows, 4 * cols) -> f32 (rows, cols) (a copy)."""
    raw = np.asarray(raw)
    return raw.view(np.float32).reshape(raw.shape[0], -1).copy()


def repack(raw: np.ndarray) -> Packed:
    w = dequantize(raw)
    return Packed(w.shape[0], w)


def from_float(w: np.ndarray) -> Packed:
    """Packed form of a float32 (rows, cols) matrix."""
    return Packed(w.shape[0], np.ascontiguousarray(w, dtype=np.float32))


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return packed.w[np.asarray(ids, dtype=np.int64).reshape(-1)]


def concat(parts: list[Packed]) -> Packed:
    return from_float(np.concatenate([p.w for p in parts]))


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    out = np.empty(packed.rows, np.float32)
    _matvec(packed.w, np.ascontiguousarray(x, dtype=np.float32), out, kernel_threads())
    return out


def matmul(packed: Packed, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) @ packed.w.T


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _matvec(w, x, out, n_threads):
    """out (rows,) = w (rows, cols) @ x (cols,); each thread takes one contiguous range of rows."""
    rows, cols = w.shape
    n_chunks = max(1, min(n_threads, rows))
    for c in prange(n_chunks):
        for r in range(c * rows // n_chunks, (c + 1) * rows // n_chunks):
            acc = np.float32(0.0)
            for k in range(cols):
                acc += w[r, k] * x[k]
            out[r] = acc
