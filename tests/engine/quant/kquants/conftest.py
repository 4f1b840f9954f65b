"""Shared checks for the K-quant tests (Q2_K..Q6_K weights, Q8_K activations), reached through the ``kcheck``
fixture (conftest modules are not importable under --import-mode=importlib).

gguf-py cannot quantize K-quants, so weights are random bytes (every quant / scale bit pattern is valid) with
chosen fp16 d / dmin, or real tensors of the gemma3 file; gguf-py's ``dequantize`` is the oracle. The integer
reference here decodes the GGUF bytes on its own, transcribing ggml's ``dequantize_row_q*_K`` loops (not the
engine's vectorized decoders), and only relies on engine.quant.q8_k's NumPy twin for the activation blocks
(which test_q8_k.py pins to the Numba quantizer bit for bit). Kernels listed in ``GGML_ORDER`` (Q6_K) must
also equal NumPy twins of llama.cpp's float summation orders bit for bit (vec_dot under 8 tokens, the tiled
matmul from 8 on; built on the same integer reference and engine.fpmath's NumPy twins of fma / hsum_float_8).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import gguf
import numba
import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES
from gguf.constants import GGMLQuantizationType as Q

from engine import fpmath
from engine.gguf import GGUFFile
from engine.quant import FORMATS
from engine.quant.q8_k import quantize_q8k_reference

HALVES = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}  # fp16 d (dmin)
EXTREME = np.array([0.0, -0.0, 2.0**-24, 6.1e-5, 1e-3, 1.0, -2.5, 65504.0, -65504.0], np.float16)


@pytest.fixture(scope="session")
def gemma3_gguf(gemma3_path):
    with GGUFFile(gemma3_path) as f:
        yield f


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


# ----------------------------------------------------------------------------------- synthetic weights


def random_blocks(ty: Q, rows: int, cols: int, rng: np.random.Generator, extreme: bool = False) -> np.ndarray:
    """Random GGUF bytes (rows, row_bytes); fp16 d / dmin are normal values of mixed sign and size or, with
    ``extreme``, drawn from zero, -0, the smallest subnormal, +-65504 (the largest half) and a few in between."""
    _, size = GGML_QUANT_SIZES[ty]
    raw = rng.integers(0, 256, (rows, cols // 256, size), dtype=np.uint8)
    for offset in HALVES[ty]:
        if extreme:
            h = rng.choice(EXTREME, size=(rows, cols // 256))
        else:
            h = (rng.standard_normal((rows, cols // 256)) * 10.0 ** rng.integers(-4, 1, (rows, cols // 256)))
        raw[..., offset:offset + 2] = h.astype(np.float16)[..., None].view(np.uint8)
    return raw.reshape(rows, -1)


def activations(T: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """(T, cols) f32 inputs, including an all-zero block (max = 0) and a block with one large outlier."""
    x = rng.standard_normal((T, cols)).astype(np.float32)
    x[0, :256] = 0.0
    x[-1, cols - 7] = -300.0
    return x


# --------------------------------------------------------------------------- independent integer reference


def _half(b: np.ndarray, offset: int) -> np.ndarray:
    return b[..., offset:offset + 2].copy().view(np.float16)[..., 0].astype(np.float32)


def _scale_min_k4(s: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml get_scale_min_k4 on (..., 12) int64 bytes."""
    if j < 4:
        return s[..., j] & 63, s[..., j + 4] & 63
    return (s[..., j + 4] & 0xF) | ((s[..., j - 4] >> 6) << 4), (s[..., j + 4] >> 4) | ((s[..., j] >> 6) << 4)


def integer_parts(ty: Q, raw: np.ndarray):
    """GGUF bytes -> d, dmin (rows, nb) f32, sc, mn (rows, nb, 16) i64 per group of 16, q (rows, nb, 256) i64
    with w[e] = d * sc[e // 16] * q[e] - dmin * mn[e // 16] (ggml's dequantize_row_*, element by element)."""
    _, size = GGML_QUANT_SIZES[ty]
    b = raw.reshape(raw.shape[0], -1, size)
    u = b.astype(np.int64)
    rows, nb = b.shape[:2]
    q = np.zeros((rows, nb, 256), np.int64)
    sc = np.zeros((rows, nb, 16), np.int64)
    mn = np.zeros((rows, nb, 16), np.int64)
    dmin = np.zeros((rows, nb), np.float32)
    if ty == Q.Q2_K:                       # scales[16] qs[64] d dmin
        d, dmin = _half(b, 80), _half(b, 82)
        e = g = 0
        for n in range(2):
            for shift in (0, 2, 4, 6):
                for half in range(2):
                    sc[..., g], mn[..., g] = u[..., g] & 0xF, u[..., g] >> 4
                    for lane in range(16):
                        q[..., e] = (u[..., 16 + 32 * n + 16 * half + lane] >> shift) & 3
                        e += 1
                    g += 1
    elif ty == Q.Q3_K:                     # hmask[32] qs[64] scales[12] d
        d = _half(b, 108)
        aux = [u[..., 96 + 4 * i] | u[..., 97 + 4 * i] << 8 | u[..., 98 + 4 * i] << 16 | u[..., 99 + 4 * i] << 24
               for i in range(3)]
        k1, k2, tmp = 0x03030303, 0x0F0F0F0F, aux[2]
        words = [(aux[0] & k2) | (((tmp >> 0) & k1) << 4), (aux[1] & k2) | (((tmp >> 2) & k1) << 4),
                 ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4), ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4)]
        for g in range(16):
            sc[..., g] = ((words[g // 4] >> (8 * (g % 4))) & 0xFF) - 32
        e, mask = 0, 1
        for n in range(2):
            for shift in (0, 2, 4, 6):
                for half in range(2):
                    for lane in range(16):
                        lo = (u[..., 32 + 32 * n + 16 * half + lane] >> shift) & 3
                        q[..., e] = lo - np.where(u[..., 16 * half + lane] & mask, 0, 4)
                        e += 1
                mask <<= 1
    elif ty in (Q.Q4_K, Q.Q5_K):           # d dmin scales[12] (qh[32]) qs[128]
        d, dmin = _half(b, 0), _half(b, 2)
        qs0 = 16 if ty == Q.Q4_K else 48
        for j in range(8):
            s, m = _scale_min_k4(u[..., 4:16], j)
            sc[..., 2 * j], sc[..., 2 * j + 1], mn[..., 2 * j], mn[..., 2 * j + 1] = s, s, m, m
            for lane in range(32):
                byte = u[..., qs0 + 32 * (j // 2) + lane]
                q[..., 32 * j + lane] = (byte & 0xF) if j % 2 == 0 else (byte >> 4)
                if ty == Q.Q5_K:
                    q[..., 32 * j + lane] += np.where(u[..., 16 + lane] & (1 << j), 16, 0)
    elif ty == Q.Q6_K:                     # ql[128] qh[64] scales[16] d
        d = _half(b, 208)
        sc[:] = b[..., 192:208].view(np.int8)
        for n in range(2):
            for lane in range(32):
                ql0, ql1, qh = u[..., 64 * n + lane], u[..., 64 * n + lane + 32], u[..., 128 + 32 * n + lane]
                q[..., 128 * n + lane] = ((ql0 & 0xF) | ((qh >> 0) & 3) << 4) - 32
                q[..., 128 * n + lane + 32] = ((ql1 & 0xF) | ((qh >> 2) & 3) << 4) - 32
                q[..., 128 * n + lane + 64] = ((ql0 >> 4) | ((qh >> 4) & 3) << 4) - 32
                q[..., 128 * n + lane + 96] = ((ql1 >> 4) | ((qh >> 6) & 3) << 4) - 32
    return d, dmin, sc, mn, q


def parts_dequantize(ty: Q, raw: np.ndarray) -> np.ndarray:
    """w from ``integer_parts`` with ggml's float ops ((d * sc) * q - dmin * m in f32): must equal gguf-py."""
    d, dmin, sc, mn, q = integer_parts(ty, raw)
    dl = np.repeat((d[..., None] * sc.astype(np.float32)), 16, axis=-1)  # (rows, nb, 256)
    ml = np.repeat((dmin[..., None] * mn.astype(np.float32)), 16, axis=-1)
    return (dl * q.astype(np.float32) - ml).reshape(raw.shape[0], -1)


def exact_matmul(ty: Q, raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's integer path in int64 / float64: (out (T, rows), scale (T, rows) = sum of |block terms|)."""
    d, dmin, sc, mn, q = integer_parts(ty, raw)
    qy, dy, _ = quantize_q8k_reference(x)
    T, nb = dy.shape
    qy = qy.reshape(T, nb, 16, 16).astype(np.int64)
    rows = q.shape[0]
    dots = np.einsum("rbgl,nbgl->nrbg", q.reshape(rows, nb, 16, 16), qy)  # (T, rows, nb, 16)
    isum = (dots * sc).sum(-1)                                            # (T, rows, nb)
    summ = (qy.sum(-1)[:, None] * mn).sum(-1)                             # bsums * minimums
    dy = dy.astype(np.float64)[:, None, :]
    plus, minus = d.astype(np.float64) * dy * isum, dmin.astype(np.float64) * dy * summ
    return (plus - minus).sum(-1), (np.abs(plus) + np.abs(minus)).sum(-1)


def ggml_order_q6k(raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of llama.cpp's x86 vec_dot_q6_K_q8_K float order (T, rows), and the scale of its rounding error
    (T, rows) = the sum of |d·dy · lane| over every fused multiply-add.

    Per super-block, int32 lane l (of 8) = Σ over the 32-runs j of sc[2j + l // 4] · Σ_i q[32j + 4l + i] · yq
    (unsigned q = signed q + 32, i < 4) - 32 · (sc[2l] · bsums[2l] + sc[2l+1] · bsums[2l+1]); then float lane l =
    fma(d·dy, float32(lane l), lane l), super-block by super-block from 0; hsum_float_8 at the end."""
    d, _, sc, _, q = integer_parts(Q.Q6_K, raw)
    qy, dy, bsums = quantize_q8k_reference(x)
    T, nb = dy.shape
    rows = q.shape[0]
    u = (q + 32) * np.repeat(sc, 16, axis=-1)                           # (rows, nb, 256) sc · unsigned q
    main = np.einsum("rbjli,nbjli->nrbl", u.reshape(rows, nb, 8, 8, 4),
                     qy.reshape(T, nb, 8, 8, 4).astype(np.int64))        # (T, rows, nb, 8 lanes)
    offset = np.einsum("rblg,nblg->nrbl", sc.reshape(rows, nb, 8, 2), bsums.reshape(T, nb, 8, 2).astype(np.int64))
    lanes = (main - 32 * offset).astype(np.float32)                     # int -> f32 rounds as cvtdq2ps does
    acc = np.zeros((T, rows, 8), np.float32)
    scale = np.zeros((T, rows))
    for b in range(nb):
        dd = (dy[:, None, b] * d[None, :, b]).astype(np.float32)[..., None]   # (T, rows, 1)
        acc = fpmath.fma_np(dd, lanes[:, :, b], acc)
        scale += np.abs(dd.astype(np.float64) * lanes[:, :, b]).sum(-1)
    return fpmath.hsum8_np(acc), scale


def ggml_tiled_q6k(raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of the float order of llama.cpp's tiled K-quant matmul on Q6_K (ggml-cpu/tiled, its AVX512-VNNI
    microtile, taken for matmuls of >= 8 tokens) (T, rows), and the scale of its rounding error (T, rows).

    Per super-block the whole integer sum isum = Σ sc · q · yq (signed q: the same integer as the kernel's unsigned
    q with the -32 · bsums correction), then acc = fma(float32(isum) · d, dy, acc) from super-block 0 on."""
    d, _, sc, _, q = integer_parts(Q.Q6_K, raw)
    qy, dy, _ = quantize_q8k_reference(x)
    T, nb = dy.shape
    w = q * np.repeat(sc, 16, axis=-1)                                  # (rows, nb, 256)
    isum = np.einsum("rbe,nbe->nrb", w, qy.reshape(T, nb, 256).astype(np.int64))  # (T, rows, nb)
    acc = np.zeros((T, w.shape[0]), np.float32)
    scale = np.zeros((T, w.shape[0]))
    for b in range(nb):
        term = isum[:, :, b].astype(np.float32) * d[None, :, b]         # f32 product, rounded
        acc = fpmath.fma_np(term, dy[:, None, b], acc)
        scale += np.abs(term.astype(np.float64) * dy[:, None, b])
    return acc, scale


def q6k_order(raw: np.ndarray, x: np.ndarray, grouped: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's Q6_K bits for a batch x (T, cols): the tiled order for the ``grouped`` tokens (default: all of
    them when T >= 8, as llama.cpp does for one batch of T tokens), vec_dot's for the others."""
    T = x.shape[0]
    grouped = np.full(T, T >= 8) if grouped is None else np.asarray(grouped, np.bool_)
    (vec, vec_scale), (tiled, tiled_scale) = ggml_order_q6k(raw, x), ggml_tiled_q6k(raw, x)
    return np.where(grouped[:, None], tiled, vec), np.where(grouped[:, None], tiled_scale, vec_scale)


GGML_ORDER = {Q.Q6_K: q6k_order}   # kernels that keep llama.cpp's float summation order bit for bit


def activation_error_bound(ty: Q, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Worst case |y - W x| (T, rows) caused by 8-bit activations.

    Per element |x - d * q| <= amax / 127 * (0.5 + 254 * 2**-24) * (1 + 2**-24): half a step of rounding
    iscale * x, plus the f32 roundings of iscale, iscale * x and d = 1 / iscale; times |w| summed over the row.
    On top, float32 accumulation slack of 1e-5 of sum |w| |x| (the kernel adds f32 block terms).
    """
    w = np.abs(gguf.quants.dequantize(raw, ty).astype(np.float64))      # (rows, cols)
    amax = np.abs(x.reshape(x.shape[0], -1, 256)).max(-1).astype(np.float64)  # (T, nb)
    per_elem = np.repeat(amax, 256, axis=1) / 127 * (0.5 + 255 * 2.0**-24)   # (T, cols)
    return per_elem @ w.T + 1e-5 * (np.abs(x) @ w.T) + 1e-30


# ------------------------------------------------------------------------------------------- the checks


def check_twin(ty: Q, raw: np.ndarray) -> None:
    """Engine twin == gguf-py bit for bit, and so is this file's independent decoding (the reference)."""
    want = gguf.quants.dequantize(raw, ty)
    np.testing.assert_array_equal(FORMATS[ty].dequantize(raw), want)
    np.testing.assert_array_equal(parts_dequantize(ty, raw), want)


def check_take_rows(ty: Q, raw: np.ndarray, ids: np.ndarray) -> None:
    fmt = FORMATS[ty]
    np.testing.assert_array_equal(fmt.take_rows(fmt.repack(raw), ids), gguf.quants.dequantize(raw, ty)[ids])


def check_kernel(ty: Q, raw: np.ndarray, x: np.ndarray) -> None:
    """matmul (and matvec on each row) == llama.cpp's float order where GGML_ORDER has it, == exact integer path
    (tight) and ~= dequantize(raw) @ x (bounded)."""
    fmt = FORMATS[ty]
    packed = fmt.repack(raw)
    y = fmt.matmul(packed, x)                                             # (T, rows)
    exact, scale = exact_matmul(ty, raw, x)
    assert y.shape == exact.shape and y.dtype == np.float32
    if ty in GGML_ORDER:                 # llama.cpp's float order, bit for bit; its roundings scale with the lanes
        ordered, scale = GGML_ORDER[ty](raw, x)
        np.testing.assert_array_equal(y, ordered)
        if getattr(fmt, "GROUPED", False):   # each token in either path, whatever the batch size
            mixed = np.arange(len(x)) % 3 == 1
            for grouped in (mixed, ~mixed):
                np.testing.assert_array_equal(fmt.matmul(packed, x, grouped), GGML_ORDER[ty](raw, x, grouped)[0])
    err = np.abs(y - exact)
    assert np.all(err <= 1e-5 * scale + 1e-30), np.max(err / (scale + 1e-30))
    lone = fmt.matmul(packed, x, np.zeros(len(x), np.bool_)) if getattr(fmt, "GROUPED", False) else y
    for n in range(x.shape[0]):
        np.testing.assert_array_equal(fmt.matvec(packed, x[n]), lone[n])  # same kernel and path, same bits
    y_float = x.astype(np.float64) @ gguf.quants.dequantize(raw, ty).astype(np.float64).T
    assert np.all(np.abs(y - y_float) <= activation_error_bound(ty, raw, x))


def check_concat(ty: Q, raws: list[np.ndarray], x: np.ndarray) -> None:
    """Tiled matrices stacked along the rows (fused Q|K|V, gate|up) == the parts' results side by side."""
    fmt = FORMATS[ty]
    parts = [fmt.repack(raw) for raw in raws]
    fused = fmt.concat(parts)
    assert fused.rows == sum(raw.shape[0] for raw in raws)
    np.testing.assert_array_equal(fmt.matmul(fused, x), np.concatenate([fmt.matmul(p, x) for p in parts], axis=1))
    ids = np.arange(fused.rows)[::-1]
    want = np.concatenate([gguf.quants.dequantize(raw, ty) for raw in raws])[ids]
    np.testing.assert_array_equal(fmt.take_rows(fused, ids), want)


def check_vector_code(ty: Q, raw: np.ndarray) -> None:
    """Recompile the kernel without the on-disk cache (cached code cannot be inspected) and check that LLVM
    vectorized the integer dot product: 16-bit multiply-adds (vpmaddwd / VNNI vpdpwssd) on zmm or ymm, and no
    64-bit multiplies (a sign that an int32 wrap is missing somewhere); kernels in llama.cpp's float order
    (GGML_ORDER) must also keep the 64 rows in zmm lanes for their fused multiply-adds. Compiled serially (prange
    runs as range; the inlined tile / block loops are the same code) because the parallel build takes twice as
    long. ``GROUPED`` kernels take the per-token gemm flags (here: none) before ``out``."""
    fmt = FORMATS[ty]
    packed = fmt.repack(raw)
    options = {k: v for k, v in fmt._matmul.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
    fresh = numba.njit(**options)(fmt._matmul.py_func)
    cols = raw.shape[1] // GGML_QUANT_SIZES[ty][1] * 256
    grouped = (np.zeros(1, np.bool_),) if getattr(fmt, "GROUPED", False) else ()
    fresh(*packed[1:], np.ones((1, cols), np.float32), *grouped, np.empty((1, packed.rows), np.float32), 1)
    asm = "".join(fresh.inspect_asm().values())
    lanes = "zmm" if ty in GGML_ORDER else "[yz]mm"
    assert re.search(rf"\bvp(maddwd|dpwssd)\b[^\n]*{lanes}", asm), "no vector integer multiply-add in the kernel"
    assert not re.search(r"\bvpmul(u)?dq\b", asm), "64-bit lanes in the kernel"
    if ty in GGML_ORDER:
        assert re.search(r"\bvfmadd\d+ps\b[^\n]*zmm", asm), "the fused multiply-adds are not vectorized"


@pytest.fixture
def kcheck() -> SimpleNamespace:
    return SimpleNamespace(
        random_blocks=random_blocks, activations=activations, twin=check_twin, take_rows=check_take_rows,
        kernel=check_kernel, concat=check_concat, vector_code=check_vector_code, ggml_order=GGML_ORDER,
        integer_parts=integer_parts, q6k_vec_dot=ggml_order_q6k, q6k_tiled=ggml_tiled_q6k,
    )
