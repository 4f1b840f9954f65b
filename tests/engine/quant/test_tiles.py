"""engine.quant._tiles.repack_rows and load_tensor's rows_done: repacking a chunk of rows at a time gives the same
arrays as one repack of the whole matrix, for every format, and reports each chunk as soon as it has been read."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import FORMATS, _tiles, f32, load_tensor, q8_0


def random_rows(ty: Q, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random GGUF bytes (rows, row_bytes): any bytes are a valid block (NaN scales compare equal below)."""
    fmt = FORMATS[ty]
    return np.random.default_rng(seed).integers(0, 256, (rows, cols // fmt.BLOCK * fmt.BLOCK_BYTES), np.uint8)


@pytest.mark.parametrize("ty", list(FORMATS), ids=lambda ty: ty.name)
def test_chunks_give_the_arrays_of_one_repack(ty):
    fmt = FORMATS[ty]
    raw = random_rows(ty, 200, 256)                                        # 3 chunks of 64 rows, then 8 rows
    whole = fmt.repack(raw)
    done: list[tuple[int, int]] = []
    chunked = _tiles.repack_rows(fmt.repack, raw, lambda start, stop: done.append((start, stop)), chunk_rows=64)
    assert done == [(0, 64), (64, 128), (128, 192), (192, 200)]
    assert type(chunked) is type(whole) and chunked[0] == whole[0] == 200
    for got, want in zip(chunked[1:], whole[1:], strict=True):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)                          # padding rows of the last tile too


def test_one_chunk_is_the_repack_itself():
    raw = random_rows(Q.Q8_0, 64, 64)
    done: list[tuple[int, int]] = []
    packed = _tiles.repack_rows(q8_0.repack, raw, lambda start, stop: done.append((start, stop)), chunk_rows=64)
    assert done == [(0, 64)]
    np.testing.assert_array_equal(packed.qs, q8_0.repack(raw).qs)


def test_arrays_without_rows_on_axis_0_are_refused():
    raw = random_rows(Q.F32, 130, 8)

    def transposed(part: np.ndarray) -> f32.Packed:                       # (cols, rows): axis 0 is not the rows
        w = f32.dequantize(part)
        return f32.Packed(len(w), np.ascontiguousarray(w.T))

    with pytest.raises(ValueError, match="not rows or tiles"):
        _tiles.repack_rows(transposed, raw, chunk_rows=64)


def test_load_tensor_reports_its_chunks_and_loads_the_matrix():
    rows = 2 * _tiles.CHUNK_ROWS + 5
    raw = random_rows(Q.Q4_1, rows, 64)
    done: list[tuple[int, int]] = []
    w = load_tensor(raw, Q.Q4_1, (rows, 64), lambda start, stop: done.append((start, stop)))
    chunk = _tiles.CHUNK_ROWS
    assert done == [(0, chunk), (chunk, 2 * chunk), (2 * chunk, rows)]
    ids = np.array([0, chunk - 1, chunk, 2 * chunk + 4])
    np.testing.assert_array_equal(w.take_rows(ids), gguf.quants.dequantize(raw[ids], Q.Q4_1))
