"""Quantized weight matrices: one module per GGML type, one QTensor class the models use.

Every format module exports the same names (adding a type = one module + one line in FORMATS):

    TYPE, BLOCK, BLOCK_BYTES      GGML type, elements per block, bytes per block
    Packed                        NamedTuple (rows, arrays...): the load-time layout the kernels read
    repack(raw) -> Packed         raw = uint8 (rows, row_bytes) GGUF bytes; copies, so the file can be closed
    dequantize(raw) -> f32        NumPy twin, equal to gguf.quants.dequantize bit for bit
    matvec(packed, x) -> f32      x (cols,) -> (rows,)         Numba kernels on 8-bit activation blocks,
    matmul(packed, x) -> f32      x (T, cols) -> (T, rows)     as llama.cpp (see activations.py)
    take_rows(packed, ids) -> f32 (n, cols), the dequantized rows (embedding lookup)
    concat(parts) -> Packed       rows of several matrices stacked (fused Q|K|V, gate|up)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

import numba
import numpy as np
from gguf.constants import GGMLQuantizationType

from engine.quant import _tiles, bf16, f16, f32, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0

FORMATS: dict[GGMLQuantizationType, ModuleType] = {m.TYPE: m for m in (
    f32, f16, bf16,
    q4_0, q4_1, q5_0, q5_1, q8_0,
    q2_k, q3_k, q4_k, q5_k, q6_k,
)}


@dataclass(frozen=True, eq=False)
class QTensor:
    """One weight matrix of y = W x: W is (rows = out_features, cols = in_features), in its packed form."""

    ggml_type: GGMLQuantizationType
    rows: int
    cols: int
    packed: NamedTuple

    def __call__(self, x: np.ndarray, grouped: np.ndarray | None = None) -> np.ndarray:
        """x (..., cols) -> (..., rows), e.g. (T, cols) -> (T, rows); one token takes the matvec path.

        ``grouped`` (T,) per-token path flags from ``gemm_groups`` (or a bool mask, read as GEMM4): only formats
        whose float order depends on the path (``GROUPED``) read it, each its own bit (``GROUP_FLAG``, default
        GEMM4): Q4_K the repacked gemm's groups of four, Q6_K the tiled matmul's runs of >= 8 tokens."""
        fmt = FORMATS[self.ggml_type]
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[-1] != self.cols:
            raise ValueError(f"input has {x.shape[-1]} columns, weight expects {self.cols}")
        if x.ndim == 1:
            return fmt.matvec(self.packed, x)
        tokens = x.reshape(-1, self.cols)                                 # (T, cols)
        if grouped is not None and getattr(fmt, "GROUPED", False):
            y = fmt.matmul(self.packed, tokens, (np.asarray(grouped) & getattr(fmt, "GROUP_FLAG", GEMM4)) != 0)
        elif len(tokens) == 1:
            y = fmt.matvec(self.packed, tokens[0])[None]
        else:
            y = fmt.matmul(self.packed, tokens)
        return y.reshape(*x.shape[:-1], self.rows)

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` of W, dequantized: (n, cols) f32."""
        return FORMATS[self.ggml_type].take_rows(self.packed, ids)

    @property
    def nbytes(self) -> int:
        return _tiles.nbytes(self.packed)


GEMM4 = 1   # gemm_groups flag: the token is in its run's leading whole groups of four (llama.cpp's repacked gemm)
TILED = 2   # gemm_groups flag: its run has >= 8 tokens (llama.cpp's tiled K-quant matmul, for types it does not
            # repack on x86: Q6_K; it tests the matmul's whole token count, ggml_tiled_min_batch)


def gemm_groups(lengths: list[int]) -> np.ndarray:
    """(Σ lengths,) uint8 flags for each sequence's run of tokens in one forward call, as if llama.cpp computed
    that run as one batch: GEMM4 for the leading whole groups of four (its repacked gemm gives the remaining
    len % 4 to its gemv), TILED for every token of a run of at least q6_k.TILED_MIN (8) tokens."""
    if not lengths:
        return np.zeros(0, np.uint8)
    flags = [(np.arange(n) < n - n % 4) * GEMM4 | (n >= q6_k.TILED_MIN) * TILED for n in lengths]
    return np.concatenate(flags).astype(np.uint8)


def _format(ggml_type: GGMLQuantizationType) -> ModuleType:
    fmt = FORMATS.get(ggml_type)
    if fmt is None:
        raise NotImplementedError(f"no kernels for GGML type {GGMLQuantizationType(ggml_type).name}")
    return fmt


def load_tensor(raw: np.ndarray, ggml_type: GGMLQuantizationType, shape: tuple[int, int],
                rows_done: Callable[[int, int], None] | None = None,
                empty: Callable[..., np.ndarray] = np.empty) -> QTensor:
    """raw uint8 (rows, row_bytes) GGUF bytes of a (rows, cols) matrix (NumPy order) -> QTensor (copied).

    Repacked a chunk of rows at a time; ``rows_done(start, stop)`` is called once rows [start, stop) have been
    read, so that the loader can drop their file pages while the rest is repacked (GGUFFile.release).
    ``empty(shape, dtype)`` allocates the result of a matrix of several chunks (see _tiles.repack_rows).
    """
    fmt = _format(ggml_type)
    rows, cols = shape
    raw = np.asarray(raw).view(np.uint8).reshape(raw.shape[0], -1)
    if cols % fmt.BLOCK or raw.shape != (rows, cols // fmt.BLOCK * fmt.BLOCK_BYTES):
        raise ValueError(f"{fmt.TYPE.name} bytes {raw.shape} do not hold a {rows}x{cols} matrix")
    return QTensor(fmt.TYPE, rows, cols, _tiles.repack_rows(fmt.repack, raw, rows_done, empty=empty))


def concat_rows(parts: list[QTensor]) -> QTensor:
    """One matrix whose rows are the rows of ``parts`` in order (same type and cols), e.g. Q|K|V fused."""
    first = parts[0]
    if any(p.ggml_type != first.ggml_type or p.cols != first.cols for p in parts):
        raise ValueError("concat_rows needs matrices of one GGML type and one column count")
    packed = _format(first.ggml_type).concat([p.packed for p in parts])
    return QTensor(first.ggml_type, sum(p.rows for p in parts), first.cols, packed)


def dequantize(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    """NumPy twin dispatch: uint8 (..., row_bytes) -> f32 (..., cols), e.g. (rows, row_bytes) -> (rows, cols)."""
    raw = np.asarray(raw).view(np.uint8)
    rows = _format(ggml_type).dequantize(raw.reshape(-1, raw.shape[-1]))  # (prod(leading dims), cols)
    return rows.reshape(*raw.shape[:-1], rows.shape[-1])


def set_threads(n: int) -> None:
    """Kernel threads for calls made from *this* thread (numba.set_num_threads), clamped to [1, max]."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
