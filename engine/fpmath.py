"""ggml's float arithmetic, reproduced bit for bit (fused multiply-add, its vector expf, its lane reductions).

llama.cpp's CPU kernels sum in SIMD lanes and fuse multiply-adds; a float32 sum taken in another order differs in
the last bit, and the 8-bit activation quantization of the next matmul can turn one last-bit difference into a
0.2 logit shift (README, "Notes on fidelity"). The kernels therefore keep ggml's order, built from these pieces:

* ``fma32`` — one rounding for a*b + c (LLVM's llvm.fma.f32; x86 vfmadd); ``f32_bits`` / ``f32_from_bits`` — a
  float's bits and back;
* ``f16_to_f32`` / ``f32_to_f16`` — IEEE half precision as uint16 bits (Numba has no float16 type), converted
  exactly / rounded to nearest even like NumPy's astype; loops over them vectorize to vcvtph2ps / vcvtps2ph;
* ``expf`` — ggml_v_expf, the polynomial exp its AVX-512 softmax and SiLU use (not libm's expf);
* ``hsum8`` / ``reduce16`` — the horizontal sums of a __m256 (hsum_float_8) and a __m512 (_mm512_reduce_add_ps).

Each has a NumPy twin (``*_np``) for the tests; fma_np rounds a float64 result, which equals the fused operation
except in double-rounding cases rarer than one in 2**29.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_EXP_SHIFTER = np.float32(float.fromhex("0x1.8p23"))      # 1.5 · 2**23: adding it rounds to an integer
_LOG2E = np.float32(float.fromhex("0x1.715476p+0"))
_LN2_HI = np.float32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = np.float32(float.fromhex("0x1.7f7d1cp-20"))
_P5 = np.float32(float.fromhex("0x1.0e4020p-7"))
_P4 = np.float32(float.fromhex("0x1.573e2ep-5"))
_P3 = np.float32(float.fromhex("0x1.555e66p-3"))
_P2 = np.float32(float.fromhex("0x1.fffdb6p-2"))
_P1 = np.float32(float.fromhex("0x1.ffffecp-1"))


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c in float32 with a single rounding."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f]))
        operands = [context.cast(builder, v, t, types.float32) for v, t in zip(args, signature.args, strict=True)]
        return builder.call(fn, operands)

    return sig, codegen


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bit pattern of a float32, as uint32 (a register bitcast; Numba has no cheaper way)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.float32)
        return builder.bitcast(value, ir.IntType(32))

    return sig, codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the uint32 ``bits``."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.uint32)
        return builder.bitcast(value, ir.FloatType())

    return sig, codegen


@intrinsic
def f64_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is the int64 ``bits``."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(value, ir.DoubleType())

    return sig, codegen


@intrinsic
def f16_to_f32(typingctx, bits):
    """The float32 equal to the half-precision float whose bits are the uint16 ``bits`` (exact)."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        half = builder.bitcast(context.cast(builder, args[0], signature.args[0], types.uint16), ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return sig, codegen


@intrinsic
def f32_to_f16(typingctx, x):
    """The bits (uint16) of float32 ``x`` rounded to half precision, nearest even (as ``astype(np.float16)``)."""
    sig = types.uint16(types.float32)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.float32)
        return builder.bitcast(builder.fptrunc(value, ir.HalfType()), ir.IntType(16))

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def expf(x: np.float32) -> np.float32:
    """ggml_v_expf for one lane: exp(x) = 2**n · p(b), n = round(x / ln 2), b = x - n ln 2 (two-part ln 2).
    Branch-free, so that loops over it vectorize."""
    x = np.float32(x)
    z = fma32(x, _LOG2E, _EXP_SHIFTER)
    n = z - _EXP_SHIFTER
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = b * b
    j = fma32(fma32(fma32(_P5, b, _P4), u, fma32(_P3, b, _P2)), u, fma32(_P1, b, np.float32(1.0)))
    in_range = abs(n) <= np.float32(192.0)      # else overflow / underflow (and -inf): ggml blends in inf or 0
    k = np.int64(n) if in_range else np.int64(0)
    scaled = np.float32(np.float64(j) * f64_from_bits((k + 1023) << 52))   # _mm512_scalef_ps: exact 2**n, one rounding
    return scaled if in_range else (np.float32(0.0) if n <= 0 else np.float32(np.inf))


@njit(cache=True, nogil=True, inline="always")
def hsum8(a0, a1, a2, a3, a4, a5, a6, a7):
    """hsum_float_8 of a __m256 holding lanes a0..a7."""
    return ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))


@njit(cache=True, nogil=True, inline="always")
def reduce16(v: np.ndarray) -> np.float32:
    """_mm512_reduce_add_ps of the 16 lanes v[0..15] (GCC's halving tree)."""
    t0 = v[0] + v[8]
    t1 = v[1] + v[9]
    t2 = v[2] + v[10]
    t3 = v[3] + v[11]
    t4 = v[4] + v[12]
    t5 = v[5] + v[13]
    t6 = v[6] + v[14]
    t7 = v[7] + v[15]
    s0, s1, s2, s3 = t4 + t0, t5 + t1, t6 + t2, t7 + t3
    return (s0 + s2) + (s1 + s3)


def fma_np(a, b, c) -> np.ndarray:
    """NumPy twin of fma32 (elementwise, broadcasting)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def expf_np(x: np.ndarray) -> np.ndarray:
    """NumPy twin of expf, elementwise."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        n = (fma_np(x, _LOG2E, _EXP_SHIFTER) - _EXP_SHIFTER).astype(np.float32)
        b = fma_np(-n, _LN2_LO, fma_np(-n, _LN2_HI, x))
        u = (b * b).astype(np.float32)
        j = fma_np(fma_np(fma_np(_P5, b, _P4), u, fma_np(_P3, b, _P2)), u, fma_np(_P1, b, np.float32(1.0)))
        finite = np.abs(n) <= 192
        scaled = np.ldexp(j.astype(np.float64), np.where(finite, n, 0).astype(np.int32)).astype(np.float32)
    return np.where(finite, scaled, np.where(n <= 0, np.float32(0.0), np.float32(np.inf))).astype(np.float32)


def hsum8_np(lanes: np.ndarray) -> np.ndarray:
    """NumPy twin of hsum8 over the last axis (8)."""
    w = lanes[..., :4] + lanes[..., 4:]
    return (w[..., 0] + w[..., 2]) + (w[..., 1] + w[..., 3])


def reduce16_np(lanes: np.ndarray) -> np.ndarray:
    """NumPy twin of reduce16 over the last axis (16)."""
    t = lanes[..., :8] + lanes[..., 8:]
    s = t[..., 4:] + t[..., :4]
    return (s[..., 0] + s[..., 2]) + (s[..., 1] + s[..., 3])
