"""The 4-byte integer dot of the 8-bit block kernels, with AVX-512 VNNI where the CPU has it.

One vpdpbusd multiplies 16 rows × 4 unsigned weight bytes by 4 signed activation bytes and sums each row's four
products; LLVM never emits it from plain loops (kernels.md §3.2), so ``lane_fma`` writes the LLVM IR itself. The
weights are uint32 words, 4 consecutive bytes of one row, rows innermost; ``lane_fma`` does for 64 rows what ggml
does per row and block for one float lane: integer dot of 4 weights with 4 activations, minus an integer offset
(the dot starts from -offset), converted to float and fused-multiply-added with a per-row scale into the lane.
Q5_0 keeps its file's 5.5 bits per weight: ``five_bit_lanes`` (several tokens) and ``block_fma5`` (one token)
put each lane's 5th bits back onto its nibbles in registers. ``rows_q4_1`` is a whole Q4_1 kernel for 16 or 32
rows and one or two tokens: its loop over the blocks is in the IR too, so that the 8 lane sums stay in registers.

Which instructions is decided when a kernel is compiled (Numba's disk cache is keyed on the CPU): with VNNI the dot
is one vpdpbusd per 16 rows, without it the same integers come from portable vector IR (shifts, masks, multiplies)
that LLVM lowers for any target. Both give the same bits; ``USE_VNNI`` lets a test compile the portable path here.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
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
_I32X8 = ir.VectorType(ir.IntType(32), 8)
_F32X16 = ir.VectorType(ir.FloatType(), 16)


def _pointer(context, builder, array_type, array, offset, element):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(builder.bitcast(data, element.as_pointer()), [offset])


def _splat(builder, value):
    one = builder.insert_element(ir.Constant(_I32X16, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(_I32X16, ir.Undefined), ir.Constant(_I32X16, [0] * 16))


def _const(value):
    return ir.Constant(_I32X16, [value] * 16)


def _const8(value):
    return ir.Constant(_I32X8, [value] * 8)


def _dot_vnni(builder, start, weights, y):
    dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3),
                                            "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(dpbusd, [start, weights, y])


def _dot_portable(builder, start, weights, y):
    """start + Σ_k byte_k(weights) (unsigned) · byte_k(y) (signed), per i32 lane (wrapping, as vpdpbusd)."""
    total = start
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
        words_a, w_at, mask, shift, y_word, offset, scales_a, acc_a, acc_at = args
        w_base = _pointer(context, builder, signature.args[0], words_a, w_at, ir.IntType(32))
        mask_v, shift_v = _splat(builder, mask), _splat(builder, shift)

        def weights(at):
            return builder.and_(builder.lshr(_load16(builder, w_base, at), shift_v), mask_v)

        _fma_rows(context, builder, signature.args[6:8], (scales_a, acc_a, acc_at), weights, y_word, offset)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def five_bit_lanes(typingctx, words, w_at, highs, h_at, out):
    """One Q5_0 block of 64 rows as the bytes ``lane_fma`` reads with mask -1: out[64 l + r] (float lane l < 8,
    row r < 64) = the 4 values of elements 4l..4l+3 of row r, i.e. the nibbles (words[w_at + 64 (l % 4) + r] >>
    4 (l // 4)) & 0x0F0F0F0F with, as bit 4 of each byte, bits 4, 12, 20, 28 of highs[h_at + r] rotated right by
    l - 4 (q5_0 stores its qh bits so that one rotation lines up a lane's four). For several tokens: one token is
    faster with ``block_fma5``, as a 512-bit load right after its 512-bit store misses store forwarding on Zen 4."""
    sig = types.void(words, types.int64, highs, types.int64, out)

    def codegen(context, builder, signature, args):
        words_a, w_at, highs_a, h_at, out_a = args
        i32 = ir.IntType(32)
        w_base = _pointer(context, builder, signature.args[0], words_a, w_at, i32)
        h_base = _pointer(context, builder, signature.args[2], highs_a, h_at, i32)
        o_base = _pointer(context, builder, signature.args[4], out_a, _i64(0), i32)
        for k in range(4):                                       # 4 × 16 rows
            h = _load16(builder, h_base, _i64(16 * k))
            for lane in range(8):
                q5 = _five_bits(builder, _load16(builder, w_base, _i64(64 * (lane % 4) + 16 * k)), h, lane)
                builder.store(q5, _vector_at(builder, o_base, 64 * lane + 16 * k, _I32X16), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def block_fma5(typingctx, words, w_at, highs, h_at, y_words, y_at, scales, acc, acc_at):
    """One token's Q5_0 block, all 8 float lanes in one call: for lane l and row r < 64, acc[acc_at + 64 l + r] =
    fma(scales[r], float32(dot(q, y) - 16 · (sum of y)), acc[acc_at + 64 l + r]) with q the 4 bytes
    ``five_bit_lanes`` builds for lane l and row r and y the 4 i8 of y_words[y_at + l]. The 8 offsets come from
    one vector sum; qh and the scales are loaded once; lanes go outermost, so that each weight word is read whole
    soon after the block starts (measured: a third faster than 16-row groups outermost when the weights stream
    from DRAM, as in a decode step; about as fast from cache)."""
    sig = types.void(words, types.int64, highs, types.int64, y_words, types.int64, scales, acc, types.int64)

    def codegen(context, builder, signature, args):
        words_a, w_at, highs_a, h_at, y_a, y_at, scales_a, acc_a, acc_at = args
        i32, f32 = ir.IntType(32), ir.FloatType()
        dot = _dot_vnni if USE_VNNI else _dot_portable
        w_base = _pointer(context, builder, signature.args[0], words_a, w_at, i32)
        h_base = _pointer(context, builder, signature.args[2], highs_a, h_at, i32)
        y_base = _pointer(context, builder, signature.args[4], y_a, y_at, i32)
        s_base = _pointer(context, builder, signature.args[6], scales_a, _i64(0), f32)
        a_base = _pointer(context, builder, signature.args[7], acc_a, acc_at, f32)
        y8 = builder.load(builder.bitcast(y_base, _I32X8.as_pointer()), align=4)        # the block's 8 words
        sums = _const8(0)
        for k in range(4):                                       # Σ of each word's 4 signed bytes
            sums = builder.add(sums, builder.ashr(builder.shl(y8, _const8(24 - 8 * k)), _const8(24)))
        starts = builder.sub(_const8(0), builder.shl(sums, _const8(4)))              # -16 · Σ y, per lane
        ys, ss = ([_splat(builder, builder.extract_element(v, ir.Constant(i32, lane))) for lane in range(8)]
                  for v in (y8, starts))
        hs = [_load16(builder, h_base, _i64(16 * k)) for k in range(4)]
        scales = [builder.load(_vector_at(builder, s_base, 16 * k, _F32X16), align=4) for k in range(4)]
        for lane in range(8):
            for k in range(4):                                   # 4 × 16 rows
                w = _load16(builder, w_base, _i64(64 * (lane % 4) + 16 * k))
                integer = dot(builder, ss[lane], _five_bits(builder, w, hs[k], lane), ys[lane])
                _accumulate(builder, scales[k], integer, _vector_at(builder, a_base, 64 * lane + 16 * k, _F32X16))
        return context.get_dummy_value()

    return sig, codegen


def _five_bits(builder, w, h, lane):
    """Float lane ``lane``'s 5-bit bytes per i32: (w >> 4 (lane // 4)) & 0x0F0F0F0F | rotr(h, lane - 4) & 0x10101010."""
    fshr = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32X16, [_I32X16] * 3),
                                          "llvm.fshr.v16i32")                   # fshr(h, h, n): rotate right
    low = builder.and_(builder.lshr(w, _const(4 * (lane // 4))), _const(0x0F0F0F0F))
    high = builder.and_(builder.call(fshr, [h, h, _const((lane - 4) & 31)]), _const(0x10101010))
    return builder.or_(low, high)


def _i64(value):
    return ir.Constant(ir.IntType(64), value)


def _vector_at(builder, base, index, vector_type):
    """Pointer to the vector starting at base[index] (a constant element index)."""
    return builder.bitcast(builder.gep(base, [_i64(index)]), vector_type.as_pointer())


def _load16(builder, base, at):
    """The 16 u32 words base[at .. at + 15] as one vector."""
    return builder.load(builder.bitcast(builder.gep(base, [at]), _I32X16.as_pointer()), align=4)


def _accumulate(builder, scale, integer, a_ptr):
    """*a_ptr = fma(scale, float32(integer), *a_ptr) for 16 rows."""
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3), "llvm.fma.v16f32")
    total = builder.call(fma, [scale, builder.sitofp(integer, _F32X16), builder.load(a_ptr, align=4)])
    builder.store(total, a_ptr, align=4)


def _fma_rows(context, builder, array_types, arrays, weights, y_word, offset):
    """acc[acc_at + r] = fma(scales[r], float32(dot(weights(r) as 4 u8, y_word as 4 i8) - offset), acc[acc_at + r])
    for the 64 rows, 16 at a time; ``weights(at)`` builds the u32 vector of rows at..at + 15."""
    dot = _dot_vnni if USE_VNNI else _dot_portable
    (scales_t, acc_t), (scales_a, acc_a, acc_at) = array_types, arrays
    s_base = _pointer(context, builder, scales_t, scales_a, _i64(0), ir.FloatType())
    a_base = _pointer(context, builder, acc_t, acc_a, acc_at, ir.FloatType())
    y, start = _splat(builder, y_word), _splat(builder, builder.neg(offset))   # the dot adds onto -offset
    for k in range(4):                                           # 4 × 16 rows
        integer = dot(builder, start, weights(_i64(16 * k)), y)
        scale = builder.load(_vector_at(builder, s_base, 16 * k, _F32X16), align=4)
        _accumulate(builder, scale, integer, _vector_at(builder, a_base, 16 * k, _F32X16))


def _block_loop(builder, name, nb, shape, step):
    """Emit ``for b in range(nb)`` (nb ≥ 1) whose sums stay in registers: phi accumulators [group][token][lane]
    (``shape``), each 16 float32 rows, start at 0 and ``step(b, accs)`` returns their values after block b.
    Returns the sums after the last block, with the builder placed after the loop."""
    n_groups, n_tok, n_lanes = shape
    zero = ir.Constant(_F32X16, [0.0] * 16)
    entry, loop = builder.block, builder.append_basic_block(f"{name}.blocks")
    builder.branch(loop)
    builder.position_at_end(loop)                                # one trip per block b, the sums in phis
    b = builder.phi(ir.IntType(64))
    accs = [[[builder.phi(_F32X16) for _ in range(n_lanes)] for _ in range(n_tok)] for _ in range(n_groups)]
    news = step(b, accs)
    latch, b_next = builder.block, builder.add(b, _i64(1))
    b.add_incoming(_i64(0), entry)
    b.add_incoming(b_next, latch)
    for phi, value in zip(_flat(accs), _flat(news), strict=True):
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, latch)
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed("<", b_next, nb), loop, done)
    builder.position_at_end(done)
    return news


def _store_sums(builder, sums, o_base, o_stride):
    """Row g·16 + i of token k at o_base[k o_stride + 16 g + i] = hsum8 of its 8 float lanes (ggml's
    hsum_float_8 order), plus its lane 8 when there is one (Q4_1's mins)."""
    for g, per_token in enumerate(sums):
        for k, a in enumerate(per_token):
            total = builder.fadd(builder.fadd(builder.fadd(a[0], a[4]), builder.fadd(a[2], a[6])),
                                 builder.fadd(builder.fadd(a[1], a[5]), builder.fadd(a[3], a[7])))
            if len(a) > 8:
                total = builder.fadd(total, a[8])
            at = builder.add(builder.mul(o_stride, _i64(k)), _i64(16 * g))
            builder.store(total, builder.bitcast(builder.gep(o_base, [at]), _F32X16.as_pointer()), align=4)


@intrinsic(prefer_literal=True)
def rows_q4_1(typingctx, words, w_at, d, m, s_at, y_words, dy, sy, n, nb, groups, tokens, prefetch, out, o_at,
              o_stride):
    """Q4_1 products of ``groups`` × 16 rows of a tile (literal 1 or 2 groups) and ``tokens`` consecutive tokens
    n, n + 1 (literal 1 or 2), the whole loop over the nb (≥ 1) blocks in registers: out[o_at + k o_stride + i]
    for token n + k and the i-th row (i < 16 groups) = hsum8(its 8 float lanes) + its mins.

    Per block b, the rows' 4 weight words words[w_at + 256 b + 64 w + i] are loaded and split into nibbles once
    for all the tokens; float lane l of token k adds fma(dd, float32(dot(lane l's 4 nibbles, the 4 i8 of
    y_words[8 nb (n + k) + 8 b + l])), lane) with dd = float32(fp16 d[s_at + 64 b + i]) · dy[nb (n + k) + b]
    rounded first, and mins = fma(fp16 m[s_at + 64 b + i], sy[nb (n + k) + b], mins): llama.cpp's order (see
    engine.quant.q4_1). words u32, d m u16 (fp16 bits), y_words i32, dy sy out f32: 1-d, contiguous. The 9
    accumulators per group and token never leave their zmm registers (18 for 2 groups or 2 tokens; 36 would
    spill). With ``prefetch`` (literal 1, else 0) each block also prefetches into L2 the same rows' words, d and
    m of the next tile (nb blocks on): one group reads one cache line in four of its tile, and the next tile's
    trip from DRAM then overlaps this one's work."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (groups, tokens, prefetch)):
        return None
    n_groups, n_tok, ahead = groups.literal_value, tokens.literal_value, prefetch.literal_value
    if n_groups not in (1, 2) or n_tok not in (1, 2) or ahead not in (0, 1):
        return None
    sig = types.void(words, types.int64, d, m, types.int64, y_words, dy, sy, types.int64, types.int64, groups,
                     tokens, prefetch, out, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        words_a, w_at, d_a, m_a, s_at, y_a, dy_a, sy_a, n, nb, _, _, _, out_a, o_at, o_stride = args
        i16, i32, f32 = ir.IntType(16), ir.IntType(32), ir.FloatType()
        tys = signature.args
        tok_at = [builder.mul(builder.add(n, _i64(k)), nb) for k in range(n_tok)]     # nb (n + k)
        bases = (_pointer(context, builder, tys[0], words_a, w_at, i32),
                 _pointer(context, builder, tys[2], d_a, s_at, i16),
                 _pointer(context, builder, tys[3], m_a, s_at, i16),
                 [_pointer(context, builder, tys[5], y_a, builder.shl(at, _i64(3)), i32) for at in tok_at],
                 [_pointer(context, builder, tys[6], dy_a, at, f32) for at in tok_at],
                 [_pointer(context, builder, tys[7], sy_a, at, f32) for at in tok_at])

        def step(b, accs):
            if ahead:
                _prefetch_rows(builder, bases[0], bases[1:3], builder.add(b, nb), 4, n_groups)
            return [_q4_1_block(builder, bases, b, 16 * g, accs[g]) for g in range(n_groups)]

        sums = _block_loop(builder, "q4_1", nb, (n_groups, n_tok, 9), step)           # 8 lanes + mins
        _store_sums(builder, sums, _pointer(context, builder, tys[13], out_a, o_at, f32), o_stride)
        return context.get_dummy_value()

    return sig, codegen


def _prefetch_rows(builder, w_base, scale_bases, b, n_words, n_groups):
    """Prefetch into L2 (prefetcht1: L1 still holds the tile being read) the lines a block kernel reads for
    block b (b ≥ nb: the next tile's) and 16 n_groups rows: n_words lines of words per group (64 n_words words
    per block), one line per block of each fp16 scale array in ``scale_bases`` (64 per block)."""
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p] + [i32] * 3),
                                              "llvm.prefetch.p0")
    w_at, s_at = builder.mul(b, _i64(64 * n_words)), builder.shl(b, _i64(6))
    lines = [builder.gep(w_base, [builder.add(w_at, _i64(64 * word + 16 * g))])
             for word in range(n_words) for g in range(n_groups)]
    lines += [builder.gep(base, [s_at]) for base in scale_bases]
    for at in lines:                                             # read, locality 2 (L2), data
        builder.call(prefetch, [builder.bitcast(at, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                                ir.Constant(i32, 1)])


def _flat(nested):
    """The phis (or values) of [group][token][lane] in one list."""
    return [v for group in nested for token in group for v in token]


def _q4_1_block(builder, bases, b, row, accs):
    """One block of ``rows_q4_1`` for the 16 rows from ``row`` and each token: the new 8 lanes + mins of each
    token from its phis ``accs``."""
    w_base, d_base, m_base, y_bases, dy_bases, sy_bases = bases
    dot = _dot_vnni if USE_VNNI else _dot_portable
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3), "llvm.fma.v16f32")
    half16, bits16 = ir.VectorType(ir.HalfType(), 16), ir.VectorType(ir.IntType(16), 16)

    def halves(base):
        at = builder.add(builder.shl(b, _i64(6)), _i64(row))
        bits = builder.load(builder.bitcast(builder.gep(base, [at]), bits16.as_pointer()), align=2)
        return builder.fpext(builder.bitcast(bits, half16), _F32X16)

    def scalar(base, at):
        return builder.load(builder.gep(base, [at]), align=4)

    def splat_f(value):
        return builder.bitcast(_splat(builder, builder.bitcast(value, ir.IntType(32))), _F32X16)

    d, m = halves(d_base), halves(m_base)
    dds = [builder.fmul(d, splat_f(scalar(base, b))) for base in dy_bases]            # d · dy, rounded
    news = [[None] * 8 + [builder.call(fma, [m, splat_f(scalar(sy, b)), a[8]])]                 # m · s + mins
            for sy, a in zip(sy_bases, accs, strict=True)]
    w_at, y_at = builder.add(builder.shl(b, _i64(8)), _i64(row)), builder.shl(b, _i64(3))
    for word in range(4):
        w = _load16(builder, w_base, builder.add(w_at, _i64(64 * word)))
        nibbles = (builder.and_(w, _const(0x0F0F0F0F)), builder.and_(builder.lshr(w, _const(4)), _const(0x0F0F0F0F)))
        for k, y_base in enumerate(y_bases):
            for lane, q in ((word, nibbles[0]), (word + 4, nibbles[1])):
                y = _splat(builder, scalar(y_base, builder.add(y_at, _i64(lane))))
                integer = builder.sitofp(dot(builder, _const(0), q, y), _F32X16)
                news[k][lane] = builder.call(fma, [dds[k], integer, accs[k][lane]])
    return news


@intrinsic(prefer_literal=True)
def rows_q8_0(typingctx, words, w_at, d, s_at, y_words, y_starts, dy, n, nb, groups, tokens, prefetch, out, o_at,
              o_stride):
    """Q8_0 products of ``groups`` × 16 rows of a tile (literal 1 or 2 groups) and ``tokens`` consecutive tokens
    n, n + 1 (literal 1 or 2), the whole loop over the nb (≥ 1) blocks in registers: out[o_at + k o_stride + i]
    for token n + k and the i-th row (i < 16 groups) = hsum8(its 8 float lanes).

    Per block b, the rows' 8 words words[w_at + 512 b + 64 l + i] (bytes q + 128) are loaded once for all the
    tokens; with j = 8 nb (n + k) + 8 b + l, float lane l of token k adds fma(dd, float32(y_starts[j] + dot(the
    4 bytes, the 4 i8 of y_words[j])), lane) with dd = float32(fp16 d[s_at + 64 b + i]) · dy[nb (n + k) + b]
    rounded first: llama.cpp's order when y_starts[j] = -128 · (sum of y_words[j]'s 4 i8), see
    engine.quant.q8_0. words u32, d u16 (fp16 bits), y_words y_starts i32, dy out f32: 1-d, contiguous. The 8
    accumulators per group and token stay in zmm registers (16 for 2 groups or 2 tokens; 32 would spill). With
    ``prefetch`` (literal 1, else 0) each block also prefetches into L2 the same rows' words and d of the next
    tile (nb blocks on), as ``rows_q4_1``."""
    if not all(isinstance(v, types.IntegerLiteral) for v in (groups, tokens, prefetch)):
        return None
    n_groups, n_tok, ahead = groups.literal_value, tokens.literal_value, prefetch.literal_value
    if n_groups not in (1, 2) or n_tok not in (1, 2) or ahead not in (0, 1):
        return None
    sig = types.void(words, types.int64, d, types.int64, y_words, y_starts, dy, types.int64, types.int64, groups,
                     tokens, prefetch, out, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        words_a, w_at, d_a, s_at, y_a, ys_a, dy_a, n, nb, _, _, _, out_a, o_at, o_stride = args
        i16, i32, f32 = ir.IntType(16), ir.IntType(32), ir.FloatType()
        tys = signature.args
        tok_at = [builder.mul(builder.add(n, _i64(k)), nb) for k in range(n_tok)]     # nb (n + k)
        bases = (_pointer(context, builder, tys[0], words_a, w_at, i32),
                 _pointer(context, builder, tys[2], d_a, s_at, i16),
                 [(_pointer(context, builder, tys[4], y_a, builder.shl(at, _i64(3)), i32),
                   _pointer(context, builder, tys[5], ys_a, builder.shl(at, _i64(3)), i32),
                   _pointer(context, builder, tys[6], dy_a, at, f32)) for at in tok_at])

        def step(b, accs):
            if ahead:
                _prefetch_rows(builder, bases[0], bases[1:2], builder.add(b, nb), 8, n_groups)
            return _q8_0_block(builder, bases, b, accs)

        sums = _block_loop(builder, "q8_0", nb, (n_groups, n_tok, 8), step)
        _store_sums(builder, sums, _pointer(context, builder, tys[12], out_a, o_at, f32), o_stride)
        return context.get_dummy_value()

    return sig, codegen


def _q8_0_block(builder, bases, b, accs):
    """One block of ``rows_q8_0`` for every group and token: the new 8 lanes [group][token][lane] from the phis
    ``accs`` (same nesting). A token's activation words, starts and dy are splat straight from memory."""
    w_base, d_base, tokens = bases
    dot = _dot_vnni if USE_VNNI else _dot_portable
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32X16, [_F32X16] * 3), "llvm.fma.v16f32")
    half16, bits16 = ir.VectorType(ir.HalfType(), 16), ir.VectorType(ir.IntType(16), 16)

    def splat_at(base, at):
        value = builder.load(builder.gep(base, [at]), align=4)
        if isinstance(value.type, ir.FloatType):
            return builder.bitcast(_splat(builder, builder.bitcast(value, ir.IntType(32))), _F32X16)
        return _splat(builder, value)

    news = []
    for g, per_token in enumerate(accs):
        at = builder.add(builder.shl(b, _i64(6)), _i64(16 * g))
        bits = builder.load(builder.bitcast(builder.gep(d_base, [at]), bits16.as_pointer()), align=2)
        d = builder.fpext(builder.bitcast(bits, half16), _F32X16)
        dds = [builder.fmul(d, splat_at(dy_base, b)) for _, _, dy_base in tokens]   # d · dy, rounded
        new = [[None] * 8 for _ in per_token]
        w_at = builder.add(builder.shl(b, _i64(9)), _i64(16 * g))
        for lane in range(8):
            w = _load16(builder, w_base, builder.add(w_at, _i64(64 * lane)))
            y_at = builder.add(builder.shl(b, _i64(3)), _i64(lane))
            for k, (y_base, start_base, _) in enumerate(tokens):
                integer = dot(builder, splat_at(start_base, y_at), w, splat_at(y_base, y_at))
                new[k][lane] = builder.call(fma, [dds[k], builder.sitofp(integer, _F32X16), per_token[k][lane]])
        news.append(new)
    return news


@njit(cache=True, inline="always")
def unspill(out, spare, at, rows, n_tokens, stride, count):
    """out[at + k rows + r] = spare[k stride + r] for the count real rows r of a unit the rows_* intrinsics wrote
    into a spare buffer because the matrix ends inside it. An explicit loop: written as a slice copy inside a
    prange, the rows came out unwritten (Numba's parfor passes)."""
    for k in range(n_tokens):
        for r in range(count):
            out[at + k * rows + r] = spare[k * stride + r]
