"""Readable NumPy building blocks of a transformer forward pass (float32 in, float32 out)."""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) * weight over the last axis; the sum of squares is taken in float64 as ggml does."""
    mean_sq = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x * (1.0 / np.sqrt(mean_sq + eps)).astype(np.float32)) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1.0) + np.exp(-x))


def silu_mul(gate_up: np.ndarray, ffn_dim: int) -> np.ndarray:
    """silu(gate) * up for gate_up = gate | up side by side: (T, 2·ffn_dim) -> (T, ffn_dim)."""
    return silu(gate_up[:, :ffn_dim]) * gate_up[:, ffn_dim:]




def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


class RopeTable:
    """cos/sin of pos · base^(-2i/n_rot) for every position up to a capacity, grown on demand."""

    def __init__(self, n_rot: int, base: float, freq_scale: float = 1.0) -> None:
        self.n_rot = n_rot
        self.inv_freq = freq_scale * base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)  # (n_rot/2,)
        self.cos = np.empty((0, n_rot // 2), np.float32)
        self.sin = np.empty((0, n_rot // 2), np.float32)

    def angles(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin), each (len(positions), n_rot/2) float32."""
        need = int(positions.max()) + 1 if positions.size else 0
        if need > len(self.cos):
            theta = np.outer(np.arange(max(need, 2 * len(self.cos)), dtype=np.float64), self.inv_freq)
            self.cos, self.sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        return self.cos[positions], self.sin[positions]


def rope_normal(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) — llama's GGUF layout. x (T, heads, d), cos/sin (T, n_rot/2)."""
    n_rot = cos.shape[-1] * 2
    out = x.copy()
    x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]                       # (T, heads, n_rot/2)
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., 0:n_rot:2] = x0 * c - x1 * s
    out[..., 1:n_rot:2] = x0 * s + x1 * c
    return out


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate (x[i], x[i + n_rot/2]) — the NeoX layout (qwen2, gemma3). x (T, heads, d)."""
    half = cos.shape[-1]
    out = x.copy()
    x0, x1 = x[..., :half], x[..., half:2 * half]
    c, s = cos[:, None, :], sin[:, None, :]
    out[..., :half] = x0 * c - x1 * s
    out[..., half:2 * half] = x0 * s + x1 * c
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start_pos: int, scale: float,
              window: int = 0) -> np.ndarray:
    """Causal grouped-query attention of T new queries over S cached keys.

    q (T, n_head, d), k/v (n_kv_head, S, d) holding f16-rounded values (llama.cpp's cache) with S = start_pos + T.
    Query head h reads KV head h // (n_head / n_kv_head). window > 0 also masks keys with q_pos - k_pos >= window
    (sliding window).
    Returns (T, n_head * d).
    """
    T, n_head, d = q.shape
    n_kv, S, _ = k.shape
    group = n_head // n_kv
    q = q.astype(np.float16).astype(np.float32)   # llama.cpp's K·Q runs in f16 against its f16 cache
    qg = q.reshape(T, n_kv, group, d).transpose(1, 2, 0, 3)                   # (n_kv, group, T, d)
    qg = qg.reshape(n_kv, group * T, d)                                                           # (n_kv, group*T, d)
    scores = np.matmul(qg, k.transpose(0, 2, 1)) * np.float32(scale)                     # (n_kv, group*T, S)
    q_pos = start_pos + np.arange(T)
    k_pos = np.arange(S)
    masked = k_pos[None, :] > q_pos[:, None]                                               # (T, S)
    if window > 0:
        masked |= (q_pos[:, None] - k_pos[None, :]) >= window
    if masked.any():   # an additive -inf bias broadcasts cheaply; boolean indexing of scores does not
        bias = np.where(masked, np.float32(-np.inf), np.float32(0.0))                       # (T, S)
        scores = (scores.reshape(n_kv, group, T, S) + bias).reshape(n_kv, group * T, S)
    out = np.matmul(softmax(scores), v)                                                   # (n_kv, group*T, d)
    return out.reshape(n_kv, group, T, d).transpose(2, 0, 1, 3).reshape(T, n_head * d)
