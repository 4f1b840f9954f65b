"""engine.quant's public surface: FORMATS, load_tensor, QTensor, concat_rows, set_threads, and properties of
the compiled kernels (vector instructions, one signature each)."""

from __future__ import annotations

import re
import sys

import gguf
import numba
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from engine.quant import FORMATS, QTensor, concat_rows, dequantize, load_tensor, set_threads, vnni
from engine.quant.activations import quantize_q8

SURFACE = ("TYPE", "BLOCK", "BLOCK_BYTES", "Packed", "repack", "dequantize", "matvec", "matmul", "take_rows",
           "concat")
BLOCK_TYPES = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)


def weight(qcheck, rng, ty: Q, rows: int, cols: int) -> tuple[np.ndarray, QTensor]:
    if ty in BLOCK_TYPES:
        raw = qcheck.synthetic(ty, rows, cols, rng)["random_bytes"]
    else:
        raw = rng.standard_normal((rows, cols)).astype({Q.F32: np.float32, Q.F16: np.float16}[ty]).view(np.uint8)
    return raw, load_tensor(raw, ty, (rows, cols))


def test_formats_share_one_surface():
    assert set(FORMATS) >= {Q.F32, Q.F16, Q.BF16, *BLOCK_TYPES}
    for ty, fmt in FORMATS.items():
        assert fmt.TYPE == ty and all(hasattr(fmt, name) for name in SURFACE), fmt.__name__


def test_load_tensor_copies_and_validates(qcheck, rng):
    raw, w = weight(qcheck, rng, Q.Q4_1, 70, 64)
    x = rng.standard_normal(64).astype(np.float32)
    before = w(x)
    raw[:] = 0                                                            # the GGUF mmap may go away
    np.testing.assert_array_equal(w(x), before)
    assert (w.ggml_type, w.rows, w.cols) == (Q.Q4_1, 70, 64)
    with pytest.raises(ValueError):
        load_tensor(raw, Q.Q4_1, (71, 64))                               # row count does not match the bytes
    with pytest.raises(ValueError):
        load_tensor(raw, Q.Q4_1, (70, 48))                               # not a whole number of blocks
    with pytest.raises(NotImplementedError):
        load_tensor(raw, Q.IQ2_XXS, (70, 256))


def test_call_routes_matvec_and_matmul(qcheck, rng):
    _, w = weight(qcheck, rng, Q.Q8_0, 130, 96)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    y = w(x)                                                              # (4, 130)
    assert y.shape == (4, 130)
    np.testing.assert_array_equal(w(x[1]), y[1])                           # (cols,) -> (rows,)
    np.testing.assert_array_equal(w(x[1:2]), y[1:2])                       # (1, cols) -> (1, rows)
    np.testing.assert_array_equal(w(x.astype(np.float64)[:, ::1]), y)      # any float input is accepted
    np.testing.assert_array_equal(w(np.asfortranarray(x)), y)
    np.testing.assert_array_equal(w(x.reshape(2, 2, 96)), y.reshape(2, 2, 130))  # leading dims kept
    with pytest.raises(ValueError):
        w(x[:, :64])


@pytest.mark.parametrize("ty", BLOCK_TYPES)
def test_concat_rows_equals_stacked_results(qcheck, rng, ty):
    parts = [weight(qcheck, rng, ty, rows, 96) for rows in (65, 7, 130)]    # rows not multiples of 64
    fused = concat_rows([w for _, w in parts])
    assert (fused.rows, fused.cols, fused.ggml_type) == (202, 96, ty)
    x = rng.standard_normal((3, 96)).astype(np.float32)
    np.testing.assert_array_equal(fused(x), np.concatenate([w(x) for _, w in parts], axis=1))
    np.testing.assert_array_equal(fused(x[0]), np.concatenate([w(x[0]) for _, w in parts]))
    ids = np.array([0, 64, 65, 71, 72, 201])
    want = np.concatenate([gguf.quants.dequantize(raw, ty) for raw, _ in parts])[ids]
    np.testing.assert_array_equal(fused.take_rows(ids), want)


def test_concat_rows_real_qkv(smollm2_file, rng):
    names = [f"blk.3.attn_{x}.weight" for x in "qkv"]
    infos = [smollm2_file.tensors[n] for n in names]
    parts = [load_tensor(smollm2_file.raw(i.name), i.ggml_type, i.shape) for i in infos]
    qkv = concat_rows(parts)
    assert (qkv.rows, qkv.cols) == (960, 576)
    x = rng.standard_normal((2, 576)).astype(np.float32)
    np.testing.assert_array_equal(qkv(x), np.concatenate([p(x) for p in parts], axis=1))


def test_concat_rows_rejects_mixed_matrices(qcheck, rng):
    _, a = weight(qcheck, rng, Q.Q4_1, 64, 64)
    _, b = weight(qcheck, rng, Q.Q8_0, 64, 64)
    _, c = weight(qcheck, rng, Q.Q4_1, 64, 96)
    for bad in ([a, b], [a, c]):
        with pytest.raises(ValueError):
            concat_rows(bad)


def test_take_rows_and_nbytes_on_the_real_embedding(smollm2_file):
    info = smollm2_file.tensors["token_embd.weight"]
    raw = smollm2_file.raw("token_embd.weight")
    emb = load_tensor(raw, info.ggml_type, info.shape)
    ids = np.array([0, 1, 49151, 12345, 1])
    np.testing.assert_array_equal(emb.take_rows(ids), gguf.quants.dequantize(raw[ids], Q.Q8_0))
    assert emb.nbytes == raw.nbytes                     # the file's bytes re-laid (49152 rows: no padding tile)
    with pytest.raises(IndexError):
        emb.take_rows(np.array([49152]))


def test_dequantize_dispatch_any_leading_shape(qcheck, rng):
    raw, _ = weight(qcheck, rng, Q.Q5_1, 12, 64)
    for shaped in (raw, raw[0], raw.reshape(3, 4, -1)):                   # (..., row_bytes)
        np.testing.assert_array_equal(dequantize(shaped, Q.Q5_1), gguf.quants.dequantize(shaped, Q.Q5_1))
    vector = rng.standard_normal(10).astype(np.float32)
    np.testing.assert_array_equal(dequantize(vector.view(np.uint8), Q.F32), vector)


@pytest.mark.parametrize("ty", BLOCK_TYPES)
def test_two_threads_give_the_same_bits(qcheck, rng, ty):
    _, w = weight(qcheck, rng, ty, 640, 64)                               # 10 tiles, split 5 / 5
    x = rng.standard_normal((6, 64)).astype(np.float32)
    try:
        set_threads(1)
        one = w(x), w(x[0])
        set_threads(2)
        two = w(x), w(x[0])
    finally:
        set_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_set_threads_clamps():
    try:
        set_threads(0)
        assert numba.get_num_threads() == 1
        set_threads(10_000)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        set_threads(numba.config.NUMBA_NUM_THREADS)


def test_one_compiled_signature_per_kernel(qcheck, rng):
    for ty in (*BLOCK_TYPES, Q.F32, Q.F16):
        for rows, cols, shape in [(7, 32, (32,)), (130, 96, (96,)), (130, 96, (1, 96)), (64, 64, (9, 64))]:
            _, w = weight(qcheck, rng, ty, rows, cols)
            w(rng.standard_normal(shape))
    for ty in BLOCK_TYPES:
        kernel_module = sys.modules[FORMATS[ty].matmul.__module__]
        assert len(kernel_module._matmul.signatures) == 1, ty.name
    assert len(FORMATS[Q.F32]._matvec.signatures) == 1                    # one compiled F32 kernel


@pytest.mark.parametrize("ty", [Q.Q4_1, Q.Q5_0, Q.Q8_0])
@pytest.mark.parametrize("use_vnni", [True, False])
def test_hot_kernels_use_avx512_integer_dot_products(qcheck, rng, ty, use_vnni, monkeypatch):
    """Recompile the kernel without the on-disk cache (cached code cannot be inspected) and check the integer dot
    product's machine code: VNNI vpdpbusd on zmm registers; compiled as for a CPU without VNNI (portable vector IR,
    which LLVM lowers to whatever integer multiply-adds the CPU has) it gives the same bits. The fp16 scales are
    widened 16 at a time (vcvtph2ps to a zmm register), not one by one."""
    monkeypatch.setattr(vnni, "USE_VNNI", use_vnni and vnni.HAS_VNNI)
    fmt = FORMATS[ty]
    _, w = weight(qcheck, rng, ty, 64, 64)
    options = {k: v for k, v in fmt._matmul.targetoptions.items() if k not in ("cache", "nopython", "parallel")}
    fresh = numba.njit(**options)(fmt._matmul.py_func)     # serial: Numba reuses parallel loop bodies in-process
    for T in (3, 1):                          # Q5_0: a micro-batch path and a lone-token path
        x = rng.standard_normal((T, 64)).astype(np.float32)
        qy, dy, sy, _ = quantize_q8(x)
        acts = (qy, dy, sy) if ty == Q.Q4_1 else (qy, dy)
        out = np.empty((T, 64), np.float32)
        fresh(*w.packed[1:], *acts, out, 1)
        np.testing.assert_array_equal(out, w(x))
    asm = "".join(fresh.inspect_asm().values())
    wanted = r"\bvpdpbusd\b[^\n]*zmm" if use_vnni and vnni.HAS_VNNI else r"\bvp(dpbusd|maddwd|dpwssd|mulld)\b[^\n]*zmm"
    assert re.search(wanted, asm), f"no zmm integer dot product ({wanted}) in the kernel"
    assert re.search(r"\bvcvtph2ps\b[^\n]*zmm", asm), "fp16 scales not converted 16 at a time"
