"""Readable NumPy building blocks of a transformer forward pass (float32 in, float32 out)."""

from __future__ import annotations

import numpy as np

from engine import fpmath, ops_jit
from engine.fpmath import expf_np, fma_np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) * weight over the last axis, as ggml_compute_forward_rms_norm_f32 computes it:
    float32 squares summed in order in float64, the mean rounded to float32, then 1/sqrtf(mean + eps)."""
    total = np.cumsum(np.square(x).astype(np.float64), axis=-1)[..., -1:]       # in order, as ggml's loop
    mean = (total / x.shape[-1]).astype(np.float32)
    scale = np.float32(1.0) / np.sqrt(mean + np.float32(eps))
    return (x * scale) * weight


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + e^-x) with ggml's vector expf (ggml_v_silu)."""
    return x / (np.float32(1.0) + expf_np(-x))


def silu_mul(gate_up: np.ndarray, ffn_dim: int) -> np.ndarray:
    """silu(gate) * up for gate_up = gate | up side by side: (T, 2·ffn_dim) -> (T, ffn_dim)."""
    return silu(gate_up[:, :ffn_dim]) * gate_up[:, ffn_dim:]




def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """NumPy twin of ops_jit.gelu_tanh (NumPy's float32 tanh may differ from libm's tanhf in the last bit)."""
    x = np.asarray(x, np.float32)
    inner = (np.float32(0.7978845608028654) * x) * fma_np(np.float32(0.044715) * x, x, np.float32(1.0))
    with np.errstate(over="ignore", invalid="ignore"):
        return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


class RopeTable:
    """cos/sin of the rotation angles for every position up to a capacity, grown on demand.

    The angles are ggml's (ggml_rope_cache_init): theta starts at the position and is multiplied by
    powf(base, -2/n_rot) in float32 once per pair, then cosf/sinf — not pos · base^(-2i/n_rot) in float64, which
    differs in the last bits and, through RoPE, in the logits.
    """

    def __init__(self, n_rot: int, base: float, freq_scale: float = 1.0) -> None:
        self.n_rot, self.base, self.freq_scale = n_rot, base, freq_scale
        self.cos = np.empty((0, n_rot // 2), np.float32)
        self.sin = np.empty((0, n_rot // 2), np.float32)

    def angles(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin), each (len(positions), n_rot/2) float32."""
        need = int(positions.max()) + 1 if positions.size else 0
        if need > len(self.cos):
            size = max(need, 2 * len(self.cos))
            self.cos, self.sin = ops_jit.rope_angles(size, self.n_rot, self.base, self.freq_scale)
        return self.cos[positions], self.sin[positions]


def rope_angles(size: int, n_rot: int, base: float, freq_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of ops_jit.rope_angles (float64 cos/sin rounded to float32: libm's cosf agrees but for rare
    last-bit cases)."""
    theta_scale = np.float32(base) ** (np.float32(-2.0) / np.float32(n_rot))
    theta = np.arange(size, dtype=np.float32)
    cos, sin = np.empty((size, n_rot // 2), np.float32), np.empty((size, n_rot // 2), np.float32)
    for i in range(n_rot // 2):
        angle = (np.float32(freq_scale) * theta).astype(np.float64)
        cos[:, i], sin[:, i] = np.cos(angle), np.sin(angle)
        theta = (theta * theta_scale).astype(np.float32)
    return cos, sin


def rope_normal(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) — llama's GGUF layout. x (T, heads, d), cos/sin (T, n_rot/2)."""
    n_rot = cos.shape[-1] * 2
    out = x.copy()
    x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]                       # (T, heads, n_rot/2)
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., 0:n_rot:2], out[..., 1:n_rot:2] = _rotated(x0, x1, c, s)
    return out


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate (x[i], x[i + n_rot/2]) — the NeoX layout (qwen2, gemma3). x (T, heads, d)."""
    half = cos.shape[-1]
    out = x.copy()
    x0, x1 = x[..., :half], x[..., half:2 * half]
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., :half], out[..., half:2 * half] = _rotated(x0, x1, c, s)
    return out


def _rotated(x0: np.ndarray, x1: np.ndarray, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x0 c - x1 s, x0 s + x1 c) with ggml's contraction: the x0 products fuse into the adds."""
    return fma_np(x0, c, -(x1 * s)), fma_np(x0, s, x1 * c)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start_pos: int, scale: float,
              window: int = 0) -> np.ndarray:
    """Causal grouped-query attention of T new queries over S cached keys, in llama.cpp's float order.

    q (T, n_head, d), k/v (n_kv_head, S, d) holding f16-rounded values (llama.cpp's cache) with S = start_pos + T.
    Query head h reads KV head h // (n_head / n_kv_head). window > 0 also masks keys with q_pos - k_pos >= window
    (sliding window). Returns (T, n_head * d). The twin of ops_jit.attend's arithmetic: K·Q and P·V summed in 16
    lanes (4 accumulators when T == 1, ggml_vec_dot_f16; 1 otherwise, tinyBLAS), ggml's softmax, f16 P.
    """
    T, n_head, d = q.shape
    n_kv, S, _ = k.shape
    group, accumulators = n_head // n_kv, 4 if T == 1 else 1
    q = q.astype(np.float16).astype(np.float32)   # llama.cpp's K·Q runs in f16 against its f16 cache
    out = np.empty((T, n_head, d), np.float32)
    for t in range(T):
        pos = start_pos + t
        first = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            keys, values = k[h // group, :pos + 1], v[h // group, :pos + 1]          # (pos + 1, d)
            scores = _lane_dot(keys * q[t, h], accumulators)                        # (pos + 1,)
            probs = _softmax_ggml(scores * np.float32(scale), first)                # (pos + 1,) f16 values
            out[t, h] = _lane_dot((values * probs[:, None]).T, accumulators)         # (d,)
    return out.reshape(T, n_head * d)


def _lane_dot(products: np.ndarray, accumulators: int) -> np.ndarray:
    """Sums of exact products (..., n) over the last axis in ggml's order: element i goes to lane i % 16 of
    accumulator (i // 16) % accumulators, added in index order; then (a0 + a2) + (a1 + a3) and reduce16."""
    n = products.shape[-1]
    padded = np.zeros((*products.shape[:-1], -(-n // 64) * 64), np.float32)
    padded[..., :n] = products
    chunks = padded.reshape(*products.shape[:-1], -1, 16)                     # (..., n / 16, 16)
    acc = np.zeros((4, *chunks.shape[:-2], 16), np.float32)
    for c in range(chunks.shape[-2]):
        acc[c % accumulators] += chunks[..., c, :]
    return fpmath.reduce16_np((acc[0] + acc[2]) + (acc[1] + acc[3]))


def _softmax_ggml(w: np.ndarray, first: int) -> np.ndarray:
    """ggml_vec_soft_max_f32 over w (n,) with w[:first] masked, then rounded to f16 (the operand of P·V)."""
    e = np.zeros(-(-len(w) // 16) * 16, np.float32)
    e[first:len(w)] = fpmath.expf_np(w[first:] - w[first:].max())
    total = sum(float(fpmath.reduce16_np(chunk)) for chunk in e.reshape(-1, 16))  # float64, chunk by chunk
    probs = e[:len(w)] * np.float32(1.0 / total)
    return probs.astype(np.float16).astype(np.float32)
