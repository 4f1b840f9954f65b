"""F32 / F16 / BF16 weights: twins against gguf-py, packed sizes (= file bytes), and the 2-byte kernels (F16 and
BF16 bits widened in registers) against float64 products of the twin's values.

Tolerance of the 2-byte kernels: they sum in float32 in an order of their own (SIMD lanes, FMAs), so they are held
to the worst-case bound of *any* float32 summation order of n = cols products, |y - y64| <= n u sum|w x| with
u = 2**-24 (Higham, Accuracy and Stability, §3.1, with one more u for the product roundings)."""

from __future__ import annotations

import re

import gguf
import numba
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import FORMATS, bf16, concat_rows, f16, load_tensor, set_threads

TWO_BYTE = (Q.F16, Q.BF16)
VALUES = {Q.F16: f16.values, Q.BF16: bf16.values}                        # uint16 bits -> f32 (NumPy)


def raw_bytes(ty: Q, w: np.ndarray) -> np.ndarray:
    """f32 (rows, cols) -> GGUF bytes uint8 (rows, row_bytes) of type ty (BF16 rounded to nearest even by gguf-py)."""
    data = {Q.F32: w.astype(np.float32), Q.F16: w.astype(np.float16)}.get(ty)
    data = gguf.quants.quantize(w, ty) if data is None else data
    return data.view(np.uint8).reshape(w.shape[0], -1)


def assert_close_to_exact(ty: Q, raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """y (T, rows) = x (T, cols) @ W.T within the float32 summation bound, W = gguf-py's values of ``raw``."""
    w = gguf.quants.dequantize(raw, ty).astype(np.float64)                # (rows, cols)
    x64 = x.astype(np.float64)
    exact = x64 @ w.T
    bound = (w.shape[1] + 1) * 2.0**-24 * (np.abs(x64) @ np.abs(w).T)
    assert y.shape == exact.shape and y.dtype == np.float32
    assert np.all(np.abs(y - exact) <= bound), np.max(np.abs(y - exact) / (bound + 1e-300))


@pytest.mark.parametrize("ty, size", [(Q.F32, 4), (Q.F16, 2), (Q.BF16, 2)])
def test_twin_kernels_and_rows(rng, ty, size):
    fmt = FORMATS[ty]
    assert (fmt.TYPE, fmt.BLOCK, fmt.BLOCK_BYTES) == (ty, 1, size)
    w = rng.standard_normal((67, 40)).astype(np.float32) * 3
    raw = raw_bytes(ty, w)
    want = gguf.quants.dequantize(raw, ty).reshape(67, 40)
    np.testing.assert_array_equal(fmt.dequantize(raw), want)
    packed = fmt.repack(raw)
    np.testing.assert_array_equal(fmt.take_rows(packed, np.array([66, 0, 3])), want[[66, 0, 3]])
    x = rng.standard_normal((5, 40)).astype(np.float32)
    exact = x.astype(np.float64) @ want.astype(np.float64).T
    np.testing.assert_allclose(fmt.matmul(packed, x), exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fmt.matvec(packed, x[2]), exact[2], rtol=1e-5, atol=1e-5)
    both = fmt.concat([packed, fmt.repack(raw[:5])])
    np.testing.assert_array_equal(fmt.take_rows(both, np.arange(72)), np.concatenate([want, want[:5]]))


@pytest.mark.parametrize("ty", [Q.F32, *TWO_BYTE])
def test_packed_bytes_are_the_file_bytes(rng, ty):
    raw = raw_bytes(ty, rng.standard_normal((131, 96)).astype(np.float32))
    w = load_tensor(raw, ty, (131, 96))
    assert w.nbytes == raw.nbytes == 131 * 96 * FORMATS[ty].BLOCK_BYTES
    assert concat_rows([w, w]).nbytes == 2 * raw.nbytes
    if ty in TWO_BYTE:
        assert w.packed.w.dtype == np.uint16 and w.packed.w.flags.c_contiguous


@pytest.mark.parametrize("ty", TWO_BYTE)
def test_twin_on_every_bit_pattern(ty):
    """All 65536 patterns: zeros of both signs, subnormals, the largest finite values, infinities, NaNs."""
    raw = np.arange(65536, dtype=np.uint32).astype("<u2").view(np.uint8).reshape(64, -1)   # (64, 2048)
    got = FORMATS[ty].dequantize(raw)                                     # (64, 1024)
    want = gguf.quants.dequantize(raw, ty)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit, NaN payloads too
    flat = got.reshape(-1)
    finite = flat[np.isfinite(flat)]
    assert np.isinf(flat).sum() == 2 and np.isnan(flat).sum() == (2046 if ty == Q.F16 else 254)
    assert finite.max() == (65504.0 if ty == Q.F16 else np.float32(3.3895314e38))
    assert np.abs(finite[finite != 0]).min() == (2.0**-24 if ty == Q.F16 else 2.0**-133)  # smallest subnormal
    packed = FORMATS[ty].repack(raw)
    np.testing.assert_array_equal(FORMATS[ty].take_rows(packed, np.array([63, 0])).view(np.uint32),
                                  want[[63, 0]].view(np.uint32))


@pytest.mark.parametrize("ty", TWO_BYTE)
@pytest.mark.parametrize("T", [1, 3, 4, 6])
def test_kernels_widen_every_bit_pattern(ty, T):
    """Row r holds bit pattern r in column r % 64 and zeros elsewhere; x = ones, so every output is the pattern's
    value itself (0 * 1 adds nothing): checks the in-register conversion on all 65536 patterns, in the 4x4 tiles
    (T = 4), the leftover tokens (T = 3, 6) and the matvec (T = 1)."""
    rows = np.arange(65536)
    w = np.zeros((65536, 64), np.uint16)
    w[rows, rows % 64] = rows
    packed = FORMATS[ty].Packed(65536, w)
    y = FORMATS[ty].matmul(packed, np.ones((T, 64), np.float32)) if T > 1 else \
        FORMATS[ty].matvec(packed, np.ones(64, np.float32))[None]
    want = VALUES[ty](rows.astype(np.uint16))
    for row in y:
        np.testing.assert_array_equal(row, want)                          # NaN == NaN here, -0 == +0


@pytest.mark.parametrize("ty", TWO_BYTE)
@pytest.mark.parametrize("rows, cols", [(1, 7), (3, 40), (67, 40), (130, 96), (203, 129), (261, 1000)])
def test_kernels_match_float64_products(rng, ty, rows, cols):
    """Row counts that are not multiples of the 4-row groups or the 64-row blocks, token counts around the 4-token
    groups and past the 64-token blocks, odd column counts (vector loop remainders), large and subnormal weights."""
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 10.0 ** rng.integers(-6, 4, (rows, 1))
    w[::5, ::3] = 6e-8 if ty == Q.F16 else 1e-39                          # subnormal in the format
    raw = raw_bytes(ty, w)
    packed = FORMATS[ty].repack(raw)
    for T in (1, 2, 3, 4, 5, 7, 8, 9, 67):
        x = rng.standard_normal((T, cols)).astype(np.float32)
        x[-1, 0] = 300.0
        assert_close_to_exact(ty, raw, x, FORMATS[ty].matmul(packed, x))
    assert_close_to_exact(ty, raw, x[:1], FORMATS[ty].matvec(packed, x[0])[None])


@pytest.mark.parametrize("ty", TWO_BYTE)
def test_two_threads_give_the_same_bits(rng, ty):
    """The thread split (contiguous ranges of 4-row groups) does not change any sum."""
    raw = raw_bytes(ty, rng.standard_normal((1001, 72)).astype(np.float32))
    packed = FORMATS[ty].repack(raw)
    x = rng.standard_normal((70, 72)).astype(np.float32)
    try:
        set_threads(1)
        one = FORMATS[ty].matmul(packed, x), FORMATS[ty].matvec(packed, x[3])
        set_threads(2)
        two = FORMATS[ty].matmul(packed, x), FORMATS[ty].matvec(packed, x[3])
    finally:
        set_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert_close_to_exact(ty, raw, x, one[0])


@pytest.mark.parametrize("ty", TWO_BYTE)
@pytest.mark.parametrize("name, n_rows", [("blk.0.attn_k.weight", 192), ("blk.0.ffn_down.weight", 576),
                                          ("token_embd.weight", 333)])
def test_real_tensors_converted_to_two_bytes(smollm2_file, rng, ty, name, n_rows):
    """SmolLM2's weights (gguf-py's dequantized Q4_1 / Q8_0 values) stored as F16 / BF16: sizes, rows, products."""
    info = smollm2_file.tensors[name]
    values = gguf.quants.dequantize(smollm2_file.raw(name)[:n_rows], info.ggml_type)  # (n_rows, cols)
    raw = raw_bytes(ty, values)
    w = load_tensor(raw, ty, values.shape)
    assert w.nbytes == raw.nbytes == values.size * 2
    ids = np.array([n_rows - 1, 0, 17])
    np.testing.assert_array_equal(w.take_rows(ids), gguf.quants.dequantize(raw, ty)[ids])
    x = rng.standard_normal((11, values.shape[1])).astype(np.float32)
    assert_close_to_exact(ty, raw, x, w(x))
    assert_close_to_exact(ty, raw, x[:1], w(x[0])[None])


@pytest.mark.parametrize("ty, convert", [(Q.F16, r"\bvcvtph2ps\b[^\n]*zmm"), (Q.BF16, r"\bvpslld\b[^\n]*zmm")])
def test_hot_kernel_converts_16_weights_per_instruction(ty, convert):
    """Recompile the kernel without the on-disk cache (cached code cannot be inspected), serially (prange runs as
    range; the inlined dot products are the same code): the weights are widened 16 at a time into zmm registers
    (F16: vcvtph2ps; BF16: zero-extend and shift left by 16) and multiplied with zmm FMAs."""
    options = {k: v for k, v in f16._matmul.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
    fresh = numba.njit(**options)(f16._matmul.py_func)
    w = FORMATS[ty].repack(raw_bytes(ty, np.ones((8, 64), np.float32)))
    bits = w.w.view(np.int16) if ty == Q.BF16 else w.w
    out = np.empty((5, 8), np.float32)
    fresh(bits, np.ones((5, 64), np.float32), out, 1)
    np.testing.assert_array_equal(out, 64.0)
    asm = "".join(fresh.inspect_asm().values())
    assert re.search(convert, asm), f"{ty.name} weights not widened 16 at a time"
    assert re.search(r"\bvfmadd\d+ps\b[^\n]*zmm", asm), "the multiply-adds are not vectorized"
    if ty == Q.BF16:
        assert not re.search(r"\bvcvtph2ps\b", asm), "BF16 bits converted as IEEE halves"


def test_one_compiled_kernel_per_bit_type(rng):
    """Any input shape or dtype reaches the same two compiled kernels: uint16 (F16) and int16 (BF16) bits."""
    for ty in TWO_BYTE:
        packed = FORMATS[ty].repack(raw_bytes(ty, rng.standard_normal((9, 32)).astype(np.float32)))
        for x in (rng.standard_normal(32), rng.standard_normal((3, 32)), rng.standard_normal((2, 64))[:, ::2]):
            FORMATS[ty].matmul(packed, np.atleast_2d(x))
            FORMATS[ty].matvec(packed, np.atleast_2d(x)[0])
    bit_types = [sig[0].dtype for sig in f16._matmul.signatures]
    assert sorted(map(str, bit_types)) == ["int16", "uint16"]
