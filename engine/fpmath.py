"""ggml's float arithmetic, reproduced bit for bit (fused multiply-add, its vector expf, its lane reductions).

llama.cpp's CPU kernels sum in SIMD lanes and fuse multiply-adds; a float32 sum taken in another order differs in
the last bit, and the 8-bit activation quantization of the next matmul can turn one last-bit difference into a
0.2 logit shift (README, "Notes on fidelity"). The kernels therefore keep ggml's order, built from these pieces:

* ``fma32`` — one rounding for a*b + c (LLVM's llvm.fma.f32; x86 vfmadd); ``f32_bits`` / ``f32_from_bits`` — a
  float's bits and back;
* ``f16_to_f32`` / ``f32_to_f16`` — IEEE half precision as uint16 bits (Numba has no float16 type), converted
  exactly / rounded to nearest even like NumPy's astype; loops over them vectorize to vcvtph2ps / vcvtps2ph;
* ``expf`` — ggml_v_expf, the polynomial exp its AVX-512 softmax and SiLU use (not libm's expf);
* ``hsum8`` / ``reduce16`` — the horizontal sums of a __m256 (hsum_float_8) and a __m512 (_mm512_reduce_add_ps);
* ``f32x16`` — a __m512 as a Numba value (LLVM's <16 x float>, kept in a register), with ``zeros16``, ``splat16``,
  ``add16``, ``fma16``, ``max16``, its horizontal ``hsum16`` (reduce16's tree) and ``hmax16``, and loads / stores
  at flat element offsets of C-contiguous arrays: ``load16`` / ``store16`` / ``rows4`` (float32), ``halves16``
  (16 halves, converted) and ``floats4`` (4 strided scalars). The attention kernels are written with them: plain
  loops over arrays leave LLVM guessing about aliasing and keep accumulators in memory.

Each scalar piece has a NumPy twin (``*_np``) for the tests; fma_np rounds a float64 result, which equals the fused
operation except in double-rounding cases rarer than one in 2**29. The vector pieces are lane-wise fma32, +, max and
reduce16 (tests/engine/test_ops_jit_attention_speed.py checks them against those).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

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


# ---- 16 float lanes (a __m512) as a Numba value --------------------------------------------------------------------

_F32X16 = ir.VectorType(ir.FloatType(), 16)
_F16X16 = ir.VectorType(ir.HalfType(), 16)
_MASK16 = ir.VectorType(ir.IntType(1), 16)
_I32, _I64 = ir.IntType(32), ir.IntType(64)


class F32x16(types.Type):
    """16 float32 lanes, LLVM's <16 x float>: a local of this type lives in a vector register."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _F32X16)


def _c_array(a, dtype) -> bool:
    return isinstance(a, types.Array) and a.dtype == dtype and a.layout == "C"


def _int64(context, builder, value, value_type):
    return context.cast(builder, value, value_type, types.int64)


def _element(context, builder, array_type, array, at, element):
    """Pointer to element ``at`` (a flat index) of a C-contiguous array."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [at])


def _splat(builder, x):
    undefined = ir.Constant(_F32X16, ir.Undefined)
    one = builder.insert_element(undefined, x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undefined, ir.Constant(ir.VectorType(_I32, 16), [0] * 16))


def _offsets(context, builder, signature, args):
    """The int64 (at, step, valid) of floats4."""
    return (_int64(context, builder, v, t) for v, t in zip(args[1:], signature.args[1:], strict=True))


@intrinsic
def zeros16(typingctx):
    """16 lanes of +0.0."""

    def codegen(context, builder, signature, args):
        return ir.Constant(_F32X16, [0.0] * 16)

    return f32x16(), codegen


@intrinsic
def splat16(typingctx, x):
    """16 lanes of float32 ``x``."""

    def codegen(context, builder, signature, args):
        return _splat(builder, context.cast(builder, args[0], signature.args[0], types.float32))

    return f32x16(x), codegen


@intrinsic
def add16(typingctx, a, b):
    """Lane-wise a + b."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])

    return f32x16(f32x16, f32x16), codegen


@intrinsic
def fma16(typingctx, x, y, acc):
    """Lane-wise fma32(x, y, acc); ``x`` a scalar (broadcast to every lane) or f32x16."""
    if x != f32x16 and not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        a = args[0] if signature.args[0] == f32x16 else _splat(
            builder, context.cast(builder, args[0], signature.args[0], types.float32))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3),
                                             "llvm.fma.v16f32")
        return builder.call(fma, [a, args[1], args[2]])

    return f32x16(x, f32x16, f32x16), codegen


@intrinsic
def max16(typingctx, acc, v):
    """Lane-wise ``v if v > acc else acc``: Python's max(acc, v), which never picks a NaN."""

    def codegen(context, builder, signature, args):
        acc_v, v_v = args
        return builder.select(builder.fcmp_ordered(">", v_v, acc_v), v_v, acc_v)

    return f32x16(f32x16, f32x16), codegen


@intrinsic
def hmax16(typingctx, v):
    """max over the 16 lanes as max16 takes it (-inf if every lane is NaN)."""

    def codegen(context, builder, signature, args):
        best = ir.Constant(ir.FloatType(), float("-inf"))
        for lane in range(16):
            x = builder.extract_element(args[0], ir.Constant(_I32, lane))
            best = builder.select(builder.fcmp_ordered(">", x, best), x, best)
        return best

    return types.float32(f32x16), codegen


@intrinsic
def hsum16(typingctx, v):
    """reduce16 of the lanes: t = lanes 0..7 + lanes 8..15, s = t[4..7] + t[0..3], (s0 + s2) + (s1 + s3)."""

    def codegen(context, builder, signature, args):
        def lanes(x, picked):
            return builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, len(picked)), picked))

        t = builder.fadd(lanes(args[0], list(range(8))), lanes(args[0], list(range(8, 16))))
        s = builder.fadd(lanes(t, [4, 5, 6, 7]), lanes(t, [0, 1, 2, 3]))
        s0, s1, s2, s3 = (builder.extract_element(s, ir.Constant(_I32, k)) for k in range(4))
        return builder.fadd(builder.fadd(s0, s2), builder.fadd(s1, s3))

    return types.float32(f32x16), codegen


@intrinsic
def load16(typingctx, a, at):
    """The 16 float32 a.flat[at : at + 16] of a C-contiguous float32 array (not bounds-checked)."""
    if not _c_array(a, types.float32) or not isinstance(at, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        at_v = _int64(context, builder, args[1], signature.args[1])
        p = _element(context, builder, signature.args[0], args[0], at_v, ir.FloatType())
        return builder.load(builder.bitcast(p, _F32X16.as_pointer()), align=4)

    return f32x16(a, at), codegen


@intrinsic
def store16(typingctx, a, at, v):
    """a.flat[at : at + 16] = v for a C-contiguous float32 array (not bounds-checked)."""
    if not _c_array(a, types.float32) or not isinstance(at, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        at_v = _int64(context, builder, args[1], signature.args[1])
        p = _element(context, builder, signature.args[0], args[0], at_v, ir.FloatType())
        builder.store(args[2], builder.bitcast(p, _F32X16.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(a, at, f32x16), codegen


@intrinsic
def halves16(typingctx, a, at, lanes):
    """The 16 halves a.flat[at : at + 16] of a C-contiguous uint16 (f16 bits) array, exactly converted to float32;
    lanes >= ``lanes`` are zeros and not read (a masked load: no access past an array's end)."""
    if not _c_array(a, types.uint16) or not isinstance(at, types.Integer) or not isinstance(lanes, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        at_v = _int64(context, builder, args[1], signature.args[1])
        count = _int64(context, builder, args[2], signature.args[2])
        count = builder.select(builder.icmp_signed("<", count, ir.Constant(_I64, 0)), ir.Constant(_I64, 0), count)
        count = builder.select(builder.icmp_signed(">", count, ir.Constant(_I64, 16)), ir.Constant(_I64, 16), count)
        bits = builder.sub(builder.shl(ir.Constant(_I64, 1), count), ir.Constant(_I64, 1))       # count low bits
        mask = builder.bitcast(builder.trunc(bits, ir.IntType(16)), _MASK16)
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_F16X16, [_F16X16.as_pointer(), _I32, _MASK16, _F16X16]),
            "llvm.masked.load.v16f16.p0v16f16")
        p = builder.bitcast(_element(context, builder, signature.args[0], args[0], at_v, ir.HalfType()),
                            _F16X16.as_pointer())
        row = builder.call(masked_load, [p, ir.Constant(_I32, 2), mask, ir.Constant(_F16X16, [0.0] * 16)])
        return builder.fpext(row, _F32X16)

    return f32x16(a, at, lanes), codegen


@intrinsic
def rows4(typingctx, a, at, step):
    """The 4 vectors a.flat[at + j·step : + 16] (j = 0..3) of a C-contiguous float32 array (not bounds-checked)."""
    if not _c_array(a, types.float32) or not isinstance(at, types.Integer) or not isinstance(step, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        at_v, step_v = (_int64(context, builder, v, t) for v, t in zip(args[1:], signature.args[1:], strict=True))
        rows = ir.Constant(ir.ArrayType(_F32X16, 4), ir.Undefined)
        for j in range(4):
            offset = builder.add(at_v, builder.mul(step_v, ir.Constant(_I64, j)))
            p = _element(context, builder, signature.args[0], args[0], offset, ir.FloatType())
            rows = builder.insert_value(rows, builder.load(builder.bitcast(p, _F32X16.as_pointer()), align=4), j)
        return rows

    return types.UniTuple(f32x16, 4)(a, at, step), codegen


@intrinsic
def floats4(typingctx, a, at, step, valid):
    """(a.flat[at + j·step] for j = 0..3) of a C-contiguous float32 array; 0.0 for j >= ``valid``, which reads
    a.flat[0] instead. Not bounds-checked otherwise."""
    if not _c_array(a, types.float32) or not all(isinstance(t, types.Integer) for t in (at, step, valid)):
        return None

    def codegen(context, builder, signature, args):
        at_v, step_v, valid_v = _offsets(context, builder, signature, args)
        values = ir.Constant(ir.ArrayType(ir.FloatType(), 4), ir.Undefined)
        for j in range(4):
            inside = builder.icmp_signed(">", valid_v, ir.Constant(_I64, j))
            offset = builder.select(inside, builder.add(at_v, builder.mul(step_v, ir.Constant(_I64, j))),
                                    ir.Constant(_I64, 0))
            x = builder.load(_element(context, builder, signature.args[0], args[0], offset, ir.FloatType()))
            values = builder.insert_value(values, builder.select(inside, x, ir.Constant(ir.FloatType(), 0.0)), j)
        return values

    return types.UniTuple(types.float32, 4)(a, at, step, valid), codegen
