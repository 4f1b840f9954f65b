"""An independent float64 NumPy llama forward pass (all positions), for checking converted and adapted models.

Weights use HF names and shapes (rows = output features). ``rope="neox"`` is HF's rotate_half on un-permuted
Q/K rows; ``rope="normal"`` rotates adjacent pairs, the layout of a GGUF llama.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TinyConfig:
    dim: int = 64
    n_head: int = 4
    n_kv_head: int = 2
    ffn_dim: int = 128
    n_layer: int = 2
    vocab: int = 320
    eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


def random_llama(cfg: TinyConfig, seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    """Random HF-named llama weights (float32), scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    q, kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(cfg.dim)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((cfg.vocab, cfg.dim)).astype(np.float32),
         "model.norm.weight": norm()}
    if not tied:
        w["lm_head.weight"] = mat(cfg.vocab, cfg.dim)
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": norm(), p + "post_attention_layernorm.weight": norm(),
                  p + "self_attn.q_proj.weight": mat(q, cfg.dim), p + "self_attn.k_proj.weight": mat(kv, cfg.dim),
                  p + "self_attn.v_proj.weight": mat(kv, cfg.dim), p + "self_attn.o_proj.weight": mat(cfg.dim, q),
                  p + "mlp.gate_proj.weight": mat(cfg.ffn_dim, cfg.dim),
                  p + "mlp.up_proj.weight": mat(cfg.ffn_dim, cfg.dim),
                  p + "mlp.down_proj.weight": mat(cfg.dim, cfg.ffn_dim)})
    return w


def forward(w: dict[str, np.ndarray], cfg: TinyConfig, tokens: list[int], rope: str) -> np.ndarray:
    """Logits (T, vocab) float64 of every position of ``tokens`` from position 0."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    T, d = len(tokens), cfg.head_dim
    x = w["model.embed_tokens.weight"][tokens]                                     # (T, dim)
    cos, sin = _angles(T, d, cfg.rope_base)                                        # (T, d/2)
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], cfg.eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, cfg.n_head, d)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, cfg.n_kv_head, d)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, cfg.n_kv_head, d)
        q, k = _rope(q, cos, sin, rope), _rope(k, cos, sin, rope)
        group = cfg.n_head // cfg.n_kv_head
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)           # head h reads kv head h // group
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(d) + causal             # (H, T, T)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        out = np.einsum("hts,shd->thd", probs, v).reshape(T, -1)
        x = x + out @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], cfg.eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return _rms(x, w["model.norm.weight"], cfg.eps) @ head.T


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _angles(T: int, d: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    theta = np.outer(np.arange(T), base ** (-np.arange(0, d, 2) / d))
    return np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, layout: str) -> np.ndarray:
    if layout == "neox":   # HF rotate_half: pairs (i, i + d/2)
        half = x.shape[-1] // 2
        x0, x1 = x[..., :half], x[..., half:]
        return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    x0, x1 = x[..., 0::2], x[..., 1::2]  # adjacent pairs (2i, 2i + 1)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
    return out
