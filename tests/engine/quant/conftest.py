"""Shared fixtures for the quant format tests: real model files, synthetic blocks, and the checks every
block format must pass (twin == gguf-py, kernel == exact integer path, kernel ~= float matmul).

The checks are reached through the ``qcheck`` fixture (conftest modules are not importable under
--import-mode=importlib). The integer reference here parses the GGUF bytes on its own, independently of
engine.quant, and only relies on engine.quant.activations' NumPy twin for the activation blocks (which
test_activations.py pins to the Numba quantizer bit for bit).
"""

from __future__ import annotations

from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES
from gguf.constants import GGMLQuantizationType as Q

from engine import fpmath
from engine.gguf import GGUFFile
from engine.quant import FORMATS
from engine.quant.activations import quantize_q8_reference

WITH_MIN = (Q.Q4_1, Q.Q5_1)  # block formats with an fp16 minimum m at bytes 2..3


@pytest.fixture(scope="session")
def smollm2_file(smollm2_path):
    with GGUFFile(smollm2_path) as f:
        yield f


@pytest.fixture(scope="session")
def gemma3_file(gemma3_path):
    with GGUFFile(gemma3_path) as f:
        yield f


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------------- synthetic weights


def quantized(ty: Q, w: np.ndarray) -> np.ndarray:
    """gguf-py's reference quantizer: f32 (rows, cols) -> uint8 (rows, row_bytes)."""
    return gguf.quants.quantize(np.asarray(w, dtype=np.float32), ty).view(np.uint8)


def extreme_weights(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of very different scales: huge (fp16 d near its top), tiny (subnormal fp16 d), zero, constant."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    scales = np.array([3e3, 1e-6, 0.0, 1.0, 1e-3, 50.0], dtype=np.float32)
    w *= scales[np.arange(rows) % len(scales), None]
    w[3::6] = 0.75                                                        # constant rows
    w[:, :32] *= rng.random((rows, 1), dtype=np.float32) < 0.5            # some all-zero first blocks
    return w


def random_blocks(ty: Q, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes (every quant bit pattern) with finite fp16 scales of mixed sign and size."""
    _, size = GGML_QUANT_SIZES[ty]
    raw = rng.integers(0, 256, (rows, cols // 32, size), dtype=np.uint8)
    n_half = 2 if ty in WITH_MIN else 1
    exponents = rng.integers(-6, 3, (rows, cols // 32, 1))
    halves = rng.standard_normal((rows, cols // 32, n_half)) * 10.0**exponents
    raw[..., : 2 * n_half] = halves.astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def synthetic_cases(ty: Q, rows: int, cols: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "normal": quantized(ty, rng.standard_normal((rows, cols))),
        "extreme": quantized(ty, extreme_weights(rows, cols, rng)),
        "random_bytes": random_blocks(ty, rows, cols, rng),
    }


def activations(T: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """(T, cols) f32 inputs, including an all-zero block (amax = 0) and a block with one large outlier."""
    x = rng.standard_normal((T, cols)).astype(np.float32)
    x[0, :32] = 0.0
    if cols > 32:
        x[-1, 40] = 300.0
    return x


# --------------------------------------------------------------------------- independent integer reference


def integer_blocks(ty: Q, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GGUF bytes -> integer quants qi (rows, nb, 32) i64, d and m (rows, nb) f32 with w = d * qi + m."""
    _, size = GGML_QUANT_SIZES[ty]
    b = raw.reshape(raw.shape[0], -1, size)

    def half(offset: int) -> np.ndarray:
        return b[..., offset:offset + 2].copy().view(np.float16)[..., 0].astype(np.float32)

    d = half(0)
    m = half(2) if ty in WITH_MIN else np.zeros_like(d)
    if ty == Q.Q8_0:
        return b[..., 2:].view(np.int8).astype(np.int64), d, m
    head = {Q.Q4_0: 2, Q.Q4_1: 4, Q.Q5_0: 6, Q.Q5_1: 8}[ty]
    qs = b[..., head:].astype(np.int64)
    qi = np.concatenate([qs & 15, qs >> 4], axis=-1)                      # element j, then j + 16
    if ty in (Q.Q5_0, Q.Q5_1):
        qh = np.unpackbits(b[..., head - 4:head], axis=-1, bitorder="little")  # bit i of the u32 qh
        qi |= qh.astype(np.int64) << 4
    offset = {Q.Q4_0: 8, Q.Q5_0: 16}.get(ty, 0)
    return qi - offset, d, m


def exact_matmul(ty: Q, raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's integer path in float64: out (T, rows) and the scale of its float32 rounding error
    (T, rows) = sum over blocks of |d * dy * sumi| + |m * s| (the two products the kernel rounds)."""
    qi, d, m = integer_blocks(ty, raw)
    qy, dy, sy, _ = quantize_q8_reference(x)
    T, nb = dy.shape
    sumi = np.einsum("rbi,nbi->nrb", qi, qy.reshape(T, nb, 32).astype(np.int64))  # (T, rows, nb)
    scaled = d.astype(np.float64) * dy[:, None, :] * sumi                # d * dy * sumi per block
    mins = m.astype(np.float64) * sy[:, None, :]                          # m * s per block (Q4_1, Q5_1)
    return (scaled + mins).sum(-1), (np.abs(scaled) + np.abs(mins)).sum(-1)


LANE_ORDER = {Q.Q4_1, Q.Q5_0, Q.Q8_0}   # kernels that keep ggml's float summation order bit for bit


def ggml_order_matmul(ty: Q, raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of ggml's x86 vec_dot for 32-blocks (T, rows): per block, float lane l (of 8) gets
    fma(d·dy, integer dot of elements 4l..4l+3); m·s sums beside the lanes (fma); hsum_float_8 at the end.
    Also returns the scale of its rounding error: the sum of the magnitudes of every term it adds."""
    qi, d, m = integer_blocks(ty, raw)
    qy, dy, sy, _ = quantize_q8_reference(x)
    T, nb = dy.shape
    lanes_int = np.einsum("rbli,nbli->nrbl", qi.reshape(*qi.shape[:2], 8, 4),
                          qy.reshape(T, nb, 8, 4).astype(np.int64)).astype(np.float32)   # (T, rows, nb, 8)
    acc = np.zeros((T, qi.shape[0], 8), np.float32)
    mins = np.zeros((T, qi.shape[0]), np.float32)
    scale = np.zeros((T, qi.shape[0]))
    for b in range(nb):
        dd = (d[None, :, b] * dy[:, None, b]).astype(np.float32)           # (T, rows)
        acc = fpmath.fma_np(dd[..., None], lanes_int[:, :, b], acc)
        mins = fpmath.fma_np(m[None, :, b], sy[:, None, b], mins)
        scale += np.abs(dd[..., None] * lanes_int[:, :, b]).sum(-1) + np.abs(m[None, :, b] * sy[:, None, b])
    return fpmath.hsum8_np(acc) + (mins if ty in WITH_MIN else np.float32(0.0)), scale


def activation_error_bound(ty: Q, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Worst-case |y - W x| from 8-bit activations (T, rows): per element |x - dy*qy| <= amax * (0.5/127 +
    2**-11) (rounding to 1/127 of the block max, fp16 rounding of dy), plus |m| * 32 * amax * 2**-10 per
    block for the fp16-rounded Q8_1 sum s, plus float32 accumulation slack."""
    w = gguf.quants.dequantize(raw, ty).astype(np.float64)              # (rows, cols)
    _, d, m = integer_blocks(ty, raw)
    amax = np.abs(x.reshape(x.shape[0], -1, 32)).max(-1).astype(np.float64)  # (T, nb)
    per_elem = np.repeat(amax, 32, axis=1) * (0.5 / 127 + 2.0**-11)       # (T, cols)
    bound = per_elem @ np.abs(w).T + (amax @ np.abs(m.astype(np.float64)).T) * 32 * 2.0**-10
    return bound * 1.01 + 1e-5 * (np.abs(x) @ np.abs(w).T) + 1e-30


# ------------------------------------------------------------------------------------------- the checks


def check_twin(ty: Q, raw: np.ndarray) -> None:
    np.testing.assert_array_equal(FORMATS[ty].dequantize(raw), gguf.quants.dequantize(raw, ty))


def check_take_rows(ty: Q, raw: np.ndarray, ids: np.ndarray) -> None:
    fmt = FORMATS[ty]
    np.testing.assert_array_equal(fmt.take_rows(fmt.repack(raw), ids), gguf.quants.dequantize(raw, ty)[ids])


def check_kernel(ty: Q, raw: np.ndarray, x: np.ndarray) -> None:
    """matmul (and matvec on each row) == exact integer path (tight) and ~= dequantize(raw) @ x (bounded)."""
    fmt = FORMATS[ty]
    packed = fmt.repack(raw)
    y = fmt.matmul(packed, x)                                             # (T, rows)
    exact, scale = exact_matmul(ty, raw, x)
    assert y.shape == exact.shape and y.dtype == np.float32
    if ty in LANE_ORDER:                 # ggml's float order, bit for bit; its roundings scale with the lane terms
        lanes, scale = ggml_order_matmul(ty, raw, x)
        np.testing.assert_array_equal(y, lanes)
    assert np.all(np.abs(y - exact) <= 1e-5 * scale + 1e-30), np.max(np.abs(y - exact) / (scale + 1e-30))
    for n in range(x.shape[0]):
        np.testing.assert_array_equal(fmt.matvec(packed, x[n]), y[n])  # same kernel, same bits
    y_float = x.astype(np.float64) @ gguf.quants.dequantize(raw, ty).astype(np.float64).T
    assert np.all(np.abs(y - y_float) <= activation_error_bound(ty, raw, x))


@pytest.fixture
def qcheck() -> SimpleNamespace:
    return SimpleNamespace(
        twin=check_twin, take_rows=check_take_rows, kernel=check_kernel, synthetic=synthetic_cases,
        activations=activations, quantized=quantized, exact=exact_matmul, integer_blocks=integer_blocks,
    )
