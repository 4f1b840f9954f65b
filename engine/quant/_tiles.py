"""Rows-in-lanes tiling shared by every block format (the layout the Numba kernels are fast on).

Each format describes a weight matrix by a ``Packed`` NamedTuple: first ``rows: int``, then its arrays, e.g.
Q4_1 = (rows, qs, d, m). The same class is used in two layouts:

* row-major *fields*, straight from the GGUF bytes: every array has the weight row on axis 0,
  e.g. qs (rows, nb, 4) u32, d (rows, nb) u16, m (rows, nb) u16 (fp16 bits; some formats widen them to f32);
* *tiled*, what the kernels read: every array re-laid as (n_tiles, ..., 64): groups of 64 consecutive rows,
  row index innermost, padded with zero rows up to a multiple of 64. A kernel walks one tile and keeps its 64
  row accumulators in SIMD lanes, so every quant byte it loads feeds 64 output rows (kernels.md §3.3).

Everything here works on any NamedTuple that follows this convention, so a new format gets concat, take_rows
and chunked loading (``repack_rows``) for free. Kernels write the tile size as the literal 64, never as
``TILE``: Numba's on-disk cache is keyed on a function's source, not on the module globals it reads, so a
changed global would silently reuse stale machine code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np

TILE = 64
CHUNK_ROWS = 64 * TILE  # rows repacked at once: a few MB of temporaries even for 2.5 kB rows

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


def f16_bits(field: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 little-endian fp16 -> (...) uint16, the half's bits kept as they are (kernels widen them with
    engine.fpmath.f16_to_f32, at half the memory of storing float32)."""
    return np.ascontiguousarray(field).view("<u2")[..., 0]


def f16_values(bits: np.ndarray) -> np.ndarray:
    """uint16 half bits -> float32 (exact): the NumPy side of ``f16_bits``."""
    return np.asarray(bits).view(np.float16).astype(np.float32)


def tile(fields: P) -> P:
    """Row-major fields -> tiled fields (n_tiles, ..., 64), C-contiguous copies."""
    return type(fields)(fields[0], *(_tile_array(a) for a in fields[1:]))


def repack_rows(repack: Callable[[np.ndarray], P], raw: np.ndarray,
                rows_done: Callable[[int, int], None] | None = None, chunk_rows: int = CHUNK_ROWS,
                empty: Callable[..., np.ndarray] = np.empty) -> P:
    """``repack(raw)`` computed ``chunk_rows`` rows at a time into preallocated result arrays, so that repacking a
    big matrix (a 262k-row embedding) costs the result plus one chunk's temporaries instead of several full-size
    copies; ``rows_done(start, stop)`` is called as soon as rows [start, stop) of ``raw`` have been read, which lets
    the loader drop their file pages before the next chunk is read. ``empty(shape, dtype)`` allocates the result
    arrays of a matrix of several chunks (e.g. in huge-page memory, engine.hugepages).

    Rows are independent in every format, so the chunks' results are the result's rows. Each array of the Packed
    holds the rows on axis 0, one entry per row (row-major, e.g. F32's (rows, cols)) or per 64-row tile (tiled);
    ``chunk_rows`` is a multiple of 64, so every chunk but the last fills whole tiles.
    """
    rows = len(raw)
    out: list[tuple[np.ndarray, int]] = []                        # (result array, rows per axis-0 entry)
    for start in range(0, max(rows, 1), chunk_rows):
        stop = min(start + chunk_rows, rows)
        part = repack(raw[start:stop])
        if rows_done is not None:
            rows_done(start, stop)
        if stop - start == rows:
            return part                                           # one chunk: it is the result
        out = out or [_empty_rows(a, chunk_rows, rows, empty) for a in part[1:]]
        for (whole, rows_per_entry), piece in zip(out, part[1:], strict=True):
            at = start // rows_per_entry
            whole[at : at + len(piece)] = piece
    return type(part)(rows, *(whole for whole, _ in out))


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


def _empty_rows(a: np.ndarray, chunk_rows: int, rows: int, empty: Callable[..., np.ndarray]) -> tuple[np.ndarray, int]:
    """(uninitialized array for ``rows`` rows shaped like chunk result ``a``, rows per axis-0 entry: 1 or 64)."""
    rows_per_entry = chunk_rows // max(len(a), 1)
    if rows_per_entry not in (1, TILE) or len(a) * rows_per_entry != chunk_rows:
        raise ValueError(f"a repacked chunk of {chunk_rows} rows has {len(a)} entries on axis 0, not rows or tiles")
    return empty((-(-rows // rows_per_entry), *a.shape[1:]), a.dtype), rows_per_entry


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
