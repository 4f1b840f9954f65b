"""AVX-512 VNNI for the 8-bit block kernels: one vpdpbusd multiplies 16 rows × 4 unsigned weight bytes by 4 signed
activation bytes and sums each row's four products (kernels.md §3.2: LLVM never emits it from plain loops).

The weights are laid out as uint32 words, 4 consecutive bytes of one row, rows innermost; ``lane_fma`` then does
for 64 rows what ggml does per row and block for one float lane: integer dot of 4 weights with 4 activations,
minus an integer offset, converted to float and fused-multiply-added with a per-row scale into the lane. Callers
keep a plain-Numba path for CPUs without VNNI (``HAS_VNNI``); both give the same bits.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.fpmath import fma32

HAS_VNNI = bool(llvm.get_host_cpu_features().get("avx512vnni", False))

_I32X16 = ir.VectorType(ir.IntType(32), 16)
_F32X16 = ir.VectorType(ir.FloatType(), 16)


def _pointer(context, builder, array_type, array, offset, element):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [offset])


def _broadcast(builder, value, vector_type):
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), ir.Constant(_I32X16, [0] * 16))


@intrinsic
def lane_fma(typingctx, words, w_at, mask, shift, y_word, offset, scales, acc, acc_at):
    """For r in 0..63: acc[acc_at + r] = fma(scales[r], float32(dot(((words[w_at + r] >> shift) & mask) as 4 u8,
    y_word as 4 i8) - offset), acc[acc_at + r]). words u32 1-d, scales f32 (64,), acc f32 1-d; ints are int64 /
    int32 scalars (mask and shift select nibbles of 4-bit formats: 0x0F0F0F0F with shift 0 or 4)."""
    sig = types.void(words, types.int64, types.int32, types.int32, types.int32, types.int32, scales, acc,
                     types.int64)

    def codegen(context, builder, signature, args):
        words_a, w_at, mask, shift, y_word, offset, scales_a, acc_a, acc_at = args
        i32, f32 = ir.IntType(32), ir.FloatType()
        w_base = _pointer(context, builder, signature.args[0], words_a, w_at, i32)
        s_base = _pointer(context, builder, signature.args[6], scales_a, ir.Constant(ir.IntType(64), 0), f32)
        a_base = _pointer(context, builder, signature.args[7], acc_a, acc_at, f32)
        y = _broadcast(builder, y_word, _I32X16)
        mask_v, shift_v = _broadcast(builder, mask, _I32X16), _broadcast(builder, shift, _I32X16)
        offset_v = _broadcast(builder, offset, _I32X16)
        dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3),
                                                "llvm.x86.avx512.vpdpbusd.512")
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3),
                                             "llvm.fma.v16f32")
        for k in range(4):                                       # 4 × 16 rows
            at = ir.Constant(ir.IntType(64), 16 * k)
            w = builder.load(builder.bitcast(builder.gep(w_base, [at]), _I32X16.as_pointer()), align=4)
            w = builder.and_(builder.lshr(w, shift_v), mask_v)
            dot = builder.sub(builder.call(dpbusd, [ir.Constant(_I32X16, None), w, y]), offset_v)
            s_ptr = builder.bitcast(builder.gep(s_base, [at]), _F32X16.as_pointer())
            a_ptr = builder.bitcast(builder.gep(a_base, [at]), _F32X16.as_pointer())
            total = builder.call(fma, [builder.load(s_ptr, align=4), builder.sitofp(dot, _F32X16),
                                       builder.load(a_ptr, align=4)])
            builder.store(total, a_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def lane_fma_loop(words, w_at, mask, shift, y0, y1, y2, y3, offset, scales, acc, acc_at):
    """lane_fma in plain loops (CPUs without VNNI): the same integers, the same fused multiply-adds, the same bits;
    y0..y3 are the four activations of y_word as int32."""
    row_bytes = words[w_at:w_at + 64].view(np.uint8)     # byte k of row r at 4r + k (1-d views vectorize)
    lanes = acc[acc_at:acc_at + 64]
    keep = np.int32(mask & 255)                           # per byte: (w >> shift) & mask, the nibbles stay apart
    for r in range(64):
        b0 = np.int32(np.int32(row_bytes[4 * r]) >> shift) & keep
        b1 = np.int32(np.int32(row_bytes[4 * r + 1]) >> shift) & keep
        b2 = np.int32(np.int32(row_bytes[4 * r + 2]) >> shift) & keep
        b3 = np.int32(np.int32(row_bytes[4 * r + 3]) >> shift) & keep
        dot = np.int32(np.int32(b0 * y0 + b1 * y1) + np.int32(b2 * y2 + b3 * y3))
        lanes[r] = fma32(scales[r], np.float32(np.int32(dot - offset)), lanes[r])
