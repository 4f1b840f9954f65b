"""The 4-byte integer dot of the 8-bit block kernels, with AVX-512 VNNI where the CPU has it.

One vpdpbusd multiplies 16 rows × 4 unsigned weight bytes by 4 signed activation bytes and sums each row's four
products; LLVM never emits it from plain loops (kernels.md §3.2), so ``lane_fma`` writes the LLVM IR itself. The
weights are uint32 words, 4 consecutive bytes of one row, rows innermost; ``lane_fma`` does for 64 rows what ggml
does per row and block for one float lane: integer dot of 4 weights with 4 activations, minus an integer offset,
converted to float and fused-multiply-added with a per-row scale into the lane.

Which instructions is decided when a kernel is compiled (Numba's disk cache is keyed on the CPU): with VNNI the dot
is one vpdpbusd per 16 rows, without it the same integers come from portable vector IR (shifts, masks, multiplies)
that LLVM lowers for any target. Both give the same bits; ``USE_VNNI`` lets a test compile the portable path here.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic


def _target_has_vnni() -> bool:
    """Whether the CPU Numba compiles for has AVX-512 VNNI: the host, unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES
    name another target (then only an explicit +avx512vnni counts)."""
    if config.CPU_FEATURES:
        return "+avx512vnni" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False
    return bool(llvm.get_host_cpu_features().get("avx512vnni", False))


HAS_VNNI = _target_has_vnni()
USE_VNNI = HAS_VNNI            # read at compile time only

_I32X16 = ir.VectorType(ir.IntType(32), 16)
_F32X16 = ir.VectorType(ir.FloatType(), 16)


def _pointer(context, builder, array_type, array, offset, element):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [offset])


def _splat(builder, value):
    one = builder.insert_element(ir.Constant(_I32X16, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(_I32X16, ir.Undefined), ir.Constant(_I32X16, [0] * 16))


def _const(value):
    return ir.Constant(_I32X16, [value] * 16)


def _dot_vnni(builder, weights, y):
    dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3),
                                            "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(dpbusd, [_const(0), weights, y])


def _dot_portable(builder, weights, y):
    """Σ_k byte_k(weights) (unsigned) · byte_k(y) (signed), per i32 lane."""
    total = _const(0)
    for k in range(4):
        w = builder.and_(builder.lshr(weights, _const(8 * k)), _const(255))
        a = builder.ashr(builder.shl(y, _const(24 - 8 * k)), _const(24))      # sign-extend byte k of y
        total = builder.add(total, builder.mul(w, a))
    return total


@intrinsic
def lane_fma(typingctx, words, w_at, mask, shift, y_word, offset, scales, acc, acc_at):
    """For r in 0..63: acc[acc_at + r] = fma(scales[r], float32(dot(((words[w_at + r] >> shift) & mask) as 4 u8,
    y_word as 4 i8) - offset), acc[acc_at + r]). words u32 1-d, scales f32 (64,), acc f32 1-d; ints are int64 /
    int32 scalars (mask and shift select nibbles of 4-bit formats: 0x0F0F0F0F with shift 0 or 4)."""
    sig = types.void(words, types.int64, types.int32, types.int32, types.int32, types.int32, scales, acc,
                     types.int64)

    def codegen(context, builder, signature, args):
        dot = _dot_vnni if USE_VNNI else _dot_portable
        words_a, w_at, mask, shift, y_word, offset, scales_a, acc_a, acc_at = args
        i32, f32 = ir.IntType(32), ir.FloatType()
        w_base = _pointer(context, builder, signature.args[0], words_a, w_at, i32)
        s_base = _pointer(context, builder, signature.args[6], scales_a, ir.Constant(ir.IntType(64), 0), f32)
        a_base = _pointer(context, builder, signature.args[7], acc_a, acc_at, f32)
        y, mask_v, shift_v, offset_v = (_splat(builder, v) for v in (y_word, mask, shift, offset))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3),
                                             "llvm.fma.v16f32")
        for k in range(4):                                       # 4 × 16 rows
            at = ir.Constant(ir.IntType(64), 16 * k)
            w = builder.load(builder.bitcast(builder.gep(w_base, [at]), _I32X16.as_pointer()), align=4)
            w = builder.and_(builder.lshr(w, shift_v), mask_v)
            integer = builder.sub(dot(builder, w, y), offset_v)
            s_ptr = builder.bitcast(builder.gep(s_base, [at]), _F32X16.as_pointer())
            a_ptr = builder.bitcast(builder.gep(a_base, [at]), _F32X16.as_pointer())
            total = builder.call(fma, [builder.load(s_ptr, align=4), builder.sitofp(integer, _F32X16),
                                       builder.load(a_ptr, align=4)])
            builder.store(total, a_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen
