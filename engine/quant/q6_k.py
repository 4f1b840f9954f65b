"""Q6_K: super-blocks of 256 weights {u8 ql[128], u8 qh[64], i8 scales[16], fp16 d}; 16 groups of 16.

For half h (elements 128h..128h+127) and l = 0..31, with a = ql[64h + l], b = ql[64h + 32 + l], c = qh[32h + l]:
element 128h + l      = (a & 15) | (c & 3) << 4,        element 128h + 32 + l = (b & 15) | (c >> 2 & 3) << 4,
element 128h + 64 + l = (a >> 4) | (c >> 4 & 3) << 4,   element 128h + 96 + l = (b >> 4) | (c >> 6) << 4.
w = d * scales[e // 16] * (q - 32) with q in 0..63.

Dot products bit for bit as llama.cpp on x86 (Q8_K activations; its Q6_K repack is for ARM only), which takes one
of two paths by the number of tokens in the matmul (src1 ne[1]):

* under 8 tokens, vec_dot_q6_K_q8_K. Per super-block, 8 int32 lanes of unsigned q:
  lane l = sum over the 32-runs j of sc[2j + l // 4] * sum_i q[32j + 4l + i] * yq[32j + 4l + i]  (i < 4)
           - 32 * (sc[2l] * bsums[2l] + sc[2l + 1] * bsums[2l + 1]),
  the -32 offset taken off by group pairs, not by the lane's own elements, so single lanes differ from sums of
  sc * (q - 32) * yq; then float lane l = fma(d * dy, float(lane l), lane l) and hsum_float_8 at the end;
* from 8 tokens on, ggml_compute_forward_mul_mat_tiled (ggml-cpu/tiled, AVX512-VNNI microtile): the super-block's
  whole integer sum isum = sum_g sc[g] * (sum_i q * yq - 32 * bsums[g]) (exact in int32, so any grouping gives it),
  then acc = fma(float(isum) * d, dy, acc), super-block by super-block from 0; no lanes, no final reduction.

``matmul`` takes ``grouped`` (T,) bool: the tokens to compute in the tiled order (engine.quant.gemm_groups sets it
for the tokens of a sequence run of >= 8; default: all tokens when T >= 8, as llama.cpp does for one batch of T).
Both orders were read from the shipped libggml-cpu.so and checked against llama.cpp's own ffn_down outputs on
gemma3 (0 mismatches); the tests hold the kernel to NumPy twins of both orders.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit, prange

from engine.fpmath import fma32, hsum8
from engine.quant import _tiles
from engine.quant.q8_k import i32, quantize_q8k
from engine.threads import kernel_threads

TYPE = GGMLQuantizationType.Q6_K
BLOCK, BLOCK_BYTES = GGML_QUANT_SIZES[TYPE]


class Packed(NamedTuple):
    rows: int
    ql: np.ndarray  # (n_tiles, nb, 128, 64) u8  | row-major fields: (rows, nb, 128) low nibbles
    qh: np.ndarray  # (n_tiles, nb, 64, 64) u8   | (rows, nb, 64) high 2-bit pairs
    sc: np.ndarray  # (n_tiles, nb, 16, 64) i8   | (rows, nb, 16) group scales
    d: np.ndarray   # (n_tiles, nb, 64) f32      | (rows, nb)


def _fields(raw: np.ndarray) -> Packed:
    b = _tiles.blocks(raw, BLOCK_BYTES)                                   # (rows, nb, 210)
    return Packed(b.shape[0], b[..., 0:128], b[..., 128:192], b[..., 192:208].view(np.int8),
                  _tiles.f16(b[..., 208:210]))


def _values(f: Packed) -> np.ndarray:
    rows, nb = f.d.shape
    ql = f.ql.reshape(rows, nb, 2, 1, 64)                                 # (.., half, nibble, 64)
    ql = np.concatenate([ql & 15, ql >> 4], axis=3)                       # elements 128h + 64k + i
    qh = f.qh.reshape(rows, nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)
    q = ql.reshape(rows, nb, 2, 4, 32) | ((qh & 3) << 4)                  # (.., half, 32-run, 32)
    q = (q.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(rows, nb, 16, 16)
    dl = (f.d[..., None] * f.sc.astype(np.float32))[..., None]            # (rows, nb, 16, 1)
    return (dl * q).reshape(rows, -1)                                     # same float ops as gguf-py


def repack(raw: np.ndarray) -> Packed:
    return _tiles.tile(_fields(raw))


def dequantize(raw: np.ndarray) -> np.ndarray:
    """NumPy twin: uint8 (rows, row_bytes) -> f32 (rows, cols), equal to gguf.quants.dequantize."""
    return _values(_fields(raw))


def take_rows(packed: Packed, ids: np.ndarray) -> np.ndarray:
    return _values(_tiles.gather(packed, ids))


concat = _tiles.concat


def matvec(packed: Packed, x: np.ndarray) -> np.ndarray:
    return matmul(packed, x.reshape(1, -1))[0]


GROUPED = True    # matmul takes the per-token choice of llama.cpp's path
GROUP_FLAG = 2    # the bit of engine.quant.gemm_groups' flags it reads (TILED: the token's run has >= 8 tokens)
TILED_MIN = 8     # llama.cpp's ggml_tiled_min_batch: the tiled matmul from this many tokens on


def matmul(packed: Packed, x: np.ndarray, grouped: np.ndarray | None = None) -> np.ndarray:
    """x (T, cols) -> (T, rows); grouped (T,) bool: tokens in llama.cpp's tiled order (default: all if T >= 8)."""
    T = x.shape[0]
    grouped = np.full(T, T >= TILED_MIN) if grouped is None else np.asarray(grouped, np.bool_)
    out = np.empty((T, packed.rows), np.float32)
    _matmul(*packed[1:], np.ascontiguousarray(x, dtype=np.float32), grouped, out, kernel_threads())
    return out


@njit(parallel=True, cache=True, nogil=True)
def _matmul(ql, qh, sc, d, x, grouped, out, n_threads):
    """out (T, rows) = W x^T from the Q8_K blocks of x; each thread takes one contiguous range of tiles."""
    qy, dy, bsums = quantize_q8k(x)
    nt = ql.shape[0]
    n_chunks = min(n_threads, nt)
    for c in prange(n_chunks):
        acc = np.empty((8, 8, 64), np.float32)  # (tokens of a micro-batch, ggml's 8 float lanes, rows)
        q = np.empty((256, 64), np.uint8)       # one super-block's 6-bit values, unpacked (16 KiB, stays in L1)
        dd = np.empty(64, np.float32)
        si = np.empty(64, np.int32)             # a tiled token's integer super-block sums
        for t in range(c * nt // n_chunks, (c + 1) * nt // n_chunks):
            _tile(ql, qh, sc, d, qy, dy, bsums, grouped, t, out, acc, q, dd, si)


@njit(cache=True, inline="always")
def _tile(ql, qh, sc, d, qy, dy, bsums, grouped, t, out, acc, q, dd, si):
    """Rows 64t..64t+63 for every token, 8 tokens at a time so each super-block is unpacked once per 8 tokens;
    the float order is ggml's x86 vec_dot_q6_K_q8_K (see _lane) or, for ``grouped`` tokens, its tiled matmul
    (acc[n, 0] only, see _isum). No fastmath."""
    nb = ql.shape[1]
    T = qy.shape[0]
    nr = min(64, out.shape[1] - t * 64)
    for n0 in range(0, T, 8):
        nn = min(8, T - n0)
        acc[:nn] = 0.0
        for b in range(nb):
            _unpack(ql, qh, t, b, q)
            for n in range(n0, n0 + nn):
                dyn = dy[n, b]
                a = acc[n - n0]
                if grouped[n]:
                    _isum(q, sc, qy[n], bsums[n], t, b, si)
                    for r in range(64):
                        a[0, r] = fma32(np.float32(si[r]) * d[t, b, r], dyn, a[0, r])
                    continue
                for r in range(64):
                    dd[r] = d[t, b, r] * dyn
                for lane in range(8):
                    _lane(q, sc, qy[n], bsums[n], t, b, lane, a, dd)
        for n in range(nn):
            a = acc[n]
            if grouped[n0 + n]:
                out[n0 + n, t * 64:t * 64 + nr] = a[0, :nr]
                continue
            for r in range(nr):
                out[n0 + n, t * 64 + r] = hsum8(a[0, r], a[1, r], a[2, r], a[3, r], a[4, r], a[5, r], a[6, r], a[7, r])


@njit(cache=True, inline="always")
def _unpack(ql, qh, t, b, q):
    """q (256, 64) = the 6-bit values of super-block b of tile t, element-major (see the module docstring).

    Works on the flat (byte, row) arrays: index i = 64·l + r walks 32 bytes l of 64 rows in one long loop
    (LLVM then runs it on whole zmm registers of bytes instead of 64 short loops).
    """
    lo, hi, s2, s4 = np.uint8(15), np.uint8(48), np.uint8(2), np.uint8(4)
    qlf, qhf, qf = ql[t, b].reshape(8192), qh[t, b].reshape(4096), q.reshape(16384)
    for h in range(2):
        for i in range(2048):                  # ql bytes 64h + l (elements 128h + l, + 64), qh bytes 32h + l
            a, c = qlf[4096 * h + i], qhf[2048 * h + i]
            qf[8192 * h + i] = (a & lo) | ((c << s4) & hi)
            qf[8192 * h + 4096 + i] = (a >> s4) | (c & hi)
        for i in range(2048):                  # ql bytes 64h + 32 + l (elements 128h + 32 + l, + 64)
            a, c = qlf[4096 * h + 2048 + i], qhf[2048 * h + i]
            qf[8192 * h + 2048 + i] = (a & lo) | ((c << s2) & hi)
            qf[8192 * h + 6144 + i] = (a >> s4) | ((c >> s2) & hi)


@njit(cache=True, inline="always")
def _isum(q, sc, qy, bsums, t, b, si):
    """si = the exact integer sum of super-block b for the 64 rows of tile t: sum over the 16 groups g of
    sc[g] * (sum_i q[16g + i] * yq[16g + i] - 32 * bsums[g]) (unsigned q; all of it exact in int32)."""
    si[:] = 0
    for g in range(16):
        o = b * 256 + 16 * g
        m = i32(32 * bsums[b * 16 + g])
        y = _ys16(qy, o)
        for r in range(64):
            s = i32(_dot4(q, 16 * g, r, y[0], y[1], y[2], y[3]) + _dot4(q, 16 * g + 4, r, y[4], y[5], y[6], y[7])
                    + _dot4(q, 16 * g + 8, r, y[8], y[9], y[10], y[11])
                    + _dot4(q, 16 * g + 12, r, y[12], y[13], y[14], y[15]))
            si[r] = i32(si[r] + i32(sc[t, b, g, r]) * i32(s - m))


@njit(cache=True, inline="always")
def _lane(q, sc, qy, bsums, t, b, lane, acc, dd):
    """acc[lane] = fma(d·dy, float(integer lane sum of super-block b), acc[lane]) for the 64 rows of tile t (the
    lane sum as in the module docstring, in one int32 expression so that LLVM keeps it in 32-bit SIMD lanes)."""
    g, e = lane // 4, 4 * lane
    m0, m1 = i32(32 * bsums[b * 16 + 2 * lane]), i32(32 * bsums[b * 16 + 2 * lane + 1])
    y = _ys(qy, b * 256 + e)
    z = _ys(qy, b * 256 + 128 + e)
    for r in range(64):
        s = i32(i32(sc[t, b, g, r]) * _dot4(q, e, r, y[0], y[1], y[2], y[3])
                + i32(sc[t, b, g + 2, r]) * _dot4(q, e + 32, r, y[4], y[5], y[6], y[7])
                + i32(sc[t, b, g + 4, r]) * _dot4(q, e + 64, r, y[8], y[9], y[10], y[11])
                + i32(sc[t, b, g + 6, r]) * _dot4(q, e + 96, r, y[12], y[13], y[14], y[15])
                + i32(sc[t, b, g + 8, r]) * _dot4(q, e + 128, r, z[0], z[1], z[2], z[3])
                + i32(sc[t, b, g + 10, r]) * _dot4(q, e + 160, r, z[4], z[5], z[6], z[7])
                + i32(sc[t, b, g + 12, r]) * _dot4(q, e + 192, r, z[8], z[9], z[10], z[11])
                + i32(sc[t, b, g + 14, r]) * _dot4(q, e + 224, r, z[12], z[13], z[14], z[15])
                - i32(sc[t, b, 2 * lane, r]) * m0 - i32(sc[t, b, 2 * lane + 1, r]) * m1)
        acc[lane, r] = fma32(dd[r], np.float32(s), acc[lane, r])


@njit(cache=True, inline="always")
def _ys(qy, o):
    """The 16 activations a lane meets in half a super-block: element o + 32k + i is y[4k + i]."""
    return (i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 2]), i32(qy[o + 3]),
            i32(qy[o + 32]), i32(qy[o + 33]), i32(qy[o + 34]), i32(qy[o + 35]),
            i32(qy[o + 64]), i32(qy[o + 65]), i32(qy[o + 66]), i32(qy[o + 67]),
            i32(qy[o + 96]), i32(qy[o + 97]), i32(qy[o + 98]), i32(qy[o + 99]))


@njit(cache=True, inline="always")
def _ys16(qy, o):
    """The 16 activations of one group of 16: elements o..o+15."""
    return (i32(qy[o]), i32(qy[o + 1]), i32(qy[o + 2]), i32(qy[o + 3]),
            i32(qy[o + 4]), i32(qy[o + 5]), i32(qy[o + 6]), i32(qy[o + 7]),
            i32(qy[o + 8]), i32(qy[o + 9]), i32(qy[o + 10]), i32(qy[o + 11]),
            i32(qy[o + 12]), i32(qy[o + 13]), i32(qy[o + 14]), i32(qy[o + 15]))


@njit(cache=True, inline="always")
def _dot4(q, e, r, y0, y1, y2, y3):
    """Σ_i q[e + i, r] · y_i: four 16-bit products (q < 64, |y| <= 127), exact in int32."""
    return i32(i32(q[e, r]) * y0 + i32(q[e + 1, r]) * y1 + i32(q[e + 2, r]) * y2 + i32(q[e + 3, r]) * y3)
