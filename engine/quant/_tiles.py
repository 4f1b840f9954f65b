"""Rows-in-lanes tiling shared by every block format (the layout the Numba kernels are fast on).

Each format describes a weight matrix by a ``Packed`` NamedTuple: first ``rows: int``, then its arrays, e.g.
Q4_1 = (rows, qs, d, m). The same class is used in two layouts:

* row-major *fields*, straight from the GGUF bytes: every array has the weight row on axis 0,
  e.g. qs (rows, nb, 16) u8, d (rows, nb) f32, m (rows, nb) f32 (fp16 scales widened once);
* *tiled*, what the kernels read: every array re-laid as (n_tiles, ..., 64): groups of 64 consecutive rows,
  row index innermost, padded with zero rows up to a multiple of 64. A kernel walks one tile and keeps its 64
  row accumulators in SIMD lanes, so every quant byte it loads feeds 64 output rows (kernels.md §3.3).

Everything here works on any NamedTuple that follows this convention, so a new format gets concat and
take_rows for free. Kernels write the tile size as the literal 64, never as ``TILE``: Numba's on-disk cache is
keyed on a function's source, not on the module globals it reads, so a changed global would silently reuse
stale machine code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np

TILE = 64

P = TypeVar("P", bound=NamedTuple)


def n_tiles(rows: int) -> int:
    return -(-rows // TILE)


def blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    """uint8 (rows, row_bytes) -> (rows, nb, block_bytes)."""
    raw = np.asarray(raw).view(np.uint8)
    return raw.reshape(raw.shape[0], -1, block_bytes)


def f16(field: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 little-endian fp16 -> (...) float32 (exact)."""
    return np.ascontiguousarray(field).view(np.float16)[..., 0].astype(np.float32)


def tile(fields: P) -> P:
    """Row-major fields -> tiled fields (n_tiles, ..., 64), C-contiguous copies."""
    return type(fields)(fields[0], *(_tile_array(a) for a in fields[1:]))


def tile_rows(raw: np.ndarray, fields: Callable[[np.ndarray], P], chunk_tiles: int = 64) -> P:
    """``tile(fields(raw))`` computed a chunk of whole tiles at a time, so that loading a big matrix (a 262k-row
    embedding) costs the result plus one chunk of memory instead of three full-size copies."""
    chunk = chunk_tiles * TILE
    first = fields(raw[:chunk])
    out = [np.zeros((n_tiles(len(raw)), *a.shape[1:], TILE), dtype=a.dtype) for a in first[1:]]
    for start in range(0, len(raw), chunk):
        part = first if start == 0 else fields(raw[start : start + chunk])
        for tiled, rows in zip(out, part[1:], strict=True):
            _fill(tiled[start // TILE :], rows)
    return type(first)(len(raw), *out)


def untile(packed: P) -> P:
    """Inverse of ``tile``: tiled fields -> row-major fields without the padding rows."""
    rows = packed[0]
    return type(packed)(rows, *(_untile_array(a)[:rows] for a in packed[1:]))


def gather(packed: P, ids: np.ndarray) -> P:
    """Row-major fields of the rows ``ids`` (n,), read straight from the tiled layout."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= packed[0]):
        raise IndexError(f"row ids must lie in [0, {packed[0]})")
    tiles, lanes = ids // TILE, ids % TILE
    return type(packed)(len(ids), *(a[tiles, ..., lanes] for a in packed[1:]))  # (n, ...) each


def concat(parts: list[P]) -> P:
    """Stack tiled matrices of one format along the rows (e.g. Q|K|V) into one tiled matrix."""
    row_major = [untile(p) for p in parts]
    arrays = (np.concatenate(column) for column in list(zip(*row_major, strict=True))[1:])
    return tile(type(parts[0])(sum(p[0] for p in parts), *arrays))


def nbytes(packed: NamedTuple) -> int:
    return sum(a.nbytes for a in packed[1:])


def _tile_array(a: np.ndarray) -> np.ndarray:
    tiled = np.zeros((n_tiles(a.shape[0]), *a.shape[1:], TILE), dtype=a.dtype)  # (n_tiles, ..., 64)
    _fill(tiled, a)
    return tiled


def _fill(tiled: np.ndarray, rows: np.ndarray) -> None:
    """Write row-major ``rows`` (n, ...) into the first tiles of ``tiled`` (n_tiles, ..., 64); padding stays 0."""
    lanes = np.moveaxis(tiled, -1, 1)                              # (n_tiles, 64, ...) view
    full, rest = divmod(rows.shape[0], TILE)
    lanes[:full] = rows[: full * TILE].reshape(full, TILE, *rows.shape[1:])
    if rest:
        lanes[full, :rest] = rows[full * TILE :]


def _untile_array(a: np.ndarray) -> np.ndarray:
    rows = np.moveaxis(a, -1, 1)                                   # (n_tiles, 64, ...)
    return rows.reshape(-1, *rows.shape[2:])                       # (n_tiles * 64, ...)
