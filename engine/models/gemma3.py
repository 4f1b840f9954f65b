"""The gemma3 architecture (text part of Gemma 3 270M/1B/4B/12B/27B): scaled embeddings, RMSNorm before and
after attention and FFN, per-head RMSNorm on Q and K, NeoX RoPE, sliding-window attention on 5 of every 6
layers, GELU-gated feed-forward, tied output head.

The GGUF converters already add Gemma's "+1" to every ``*_norm.weight``: the norms use the weights as stored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from engine.gguf import GGUFFile
from engine.kv_cache import KVCache, Segment, SegmentBatch
from engine.models._weights import load, load_fused, matmul_parts, vector
from engine.ops import RopeTable, rope_neox
from engine.ops_jit import attend_segments, geglu, gelu_tanh, rms_norm
from engine.quant import QTensor, gemm_groups

ARCH = "gemma3"
SWA_PATTERN = 6            # llama.cpp set_swa_pattern(6): layer il slides iff il % 6 < 5; every 6th is global
LOCAL_ROPE_BASE = 10000.0  # llama.cpp hard-codes it for the sliding layers when the file has no key for it
LAYERS_27B = 62            # llama.cpp scales 27B queries by 1/sqrt(dim / n_head) instead of 1/sqrt(head_dim)


@dataclass(frozen=True)
class Gemma3Config:
    n_layer: int
    dim: int
    n_head: int
    n_kv_head: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    rope_base: float               # global layers
    rope_freq_scale: float         # global layers only; sliding layers are never scaled
    rope_base_local: float         # sliding layers
    sliding_window: int            # a key is hidden from a query iff q_pos - k_pos >= sliding_window
    swa_layers: tuple[bool, ...]   # (n_layer,) True for sliding-window layers
    attn_scale: float              # multiplies the rotated queries (query_pre_attn_scalar^-1/2)
    final_logit_softcap: float     # 0 = off
    vocab_size: int
    context_length: int

    @classmethod
    def from_metadata(cls, md: dict) -> Gemma3Config:
        def k(key, default=None):
            return md.get(f"{ARCH}.{key}", default)

        n_layer = int(k("block_count"))
        n_head = int(k("attention.head_count"))
        dim = int(k("embedding_length"))
        head_dim = int(k("attention.key_length", dim // n_head))
        scale = float(k("rope.scaling.factor", 0.0) or 0.0)
        pattern = k("attention.sliding_window_pattern")   # per-layer bools, from Ollama's converter
        swa = (tuple(bool(b) for b in pattern) if pattern is not None
               else tuple(il % SWA_PATTERN < SWA_PATTERN - 1 for il in range(n_layer)))
        query_scalar = dim // n_head if n_layer == LAYERS_27B else head_dim
        return cls(
            n_layer=n_layer, dim=dim, n_head=n_head, n_kv_head=int(k("attention.head_count_kv", n_head)),
            head_dim=head_dim, ffn_dim=int(k("feed_forward_length")),
            norm_eps=float(k("attention.layer_norm_rms_epsilon")),
            rope_base=float(k("rope.freq_base", 10000.0)), rope_freq_scale=1.0 / scale if scale else 1.0,
            rope_base_local=float(k("rope.freq_base_swa", k("rope.local.freq_base", LOCAL_ROPE_BASE))),
            sliding_window=int(k("attention.sliding_window")), swa_layers=swa,
            attn_scale=1.0 / float(np.sqrt(query_scalar)),
            final_logit_softcap=float(k("final_logit_softcapping", 0.0) or 0.0),
            vocab_size=int(k("vocab_size", len(md["tokenizer.ggml.tokens"]))),
            context_length=int(k("context_length", 2048)),
        )


@dataclass(frozen=True)
class Gemma3Block:
    attn_norm: np.ndarray            # (dim,)
    attn_qkv: tuple[QTensor, ...]    # attn_q | attn_k | attn_v, runs of one quant type fused (see _fused)
    attn_q_norm: np.ndarray          # (head_dim,) per-head RMSNorm of q, before RoPE
    attn_k_norm: np.ndarray          # (head_dim,)
    attn_output: QTensor             # (dim, n_head · head_dim)
    post_attention_norm: np.ndarray  # (dim,)
    ffn_norm: np.ndarray             # (dim,) = HF pre_feedforward_layernorm
    ffn_gate_up: tuple[QTensor, ...]  # ffn_gate | ffn_up, fused if of one type: (2 · ffn_dim, dim) in all
    ffn_down: QTensor                # (dim, ffn_dim)
    post_ffw_norm: np.ndarray        # (dim,)


class Gemma3:
    """Forward pass over a KV cache; weights stay quantized and are multiplied by engine.quant kernels."""

    def __init__(self, cfg: Gemma3Config, token_embd: QTensor, blocks: list[Gemma3Block],
                 output_norm: np.ndarray, output: QTensor) -> None:
        self.cfg = cfg
        self.token_embd, self.blocks, self.output_norm, self.output = token_embd, blocks, output_norm, output
        self.rope_global = RopeTable(cfg.head_dim, cfg.rope_base, cfg.rope_freq_scale)
        self.rope_local = RopeTable(cfg.head_dim, cfg.rope_base_local)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Gemma3:
        cfg = Gemma3Config.from_metadata(gguf.metadata)

        blocks = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            blocks.append(Gemma3Block(
                attn_norm=vector(gguf, p + "attn_norm.weight"),
                attn_qkv=load_fused(gguf, [p + f"attn_{x}.weight" for x in "qkv"]),
                attn_q_norm=vector(gguf, p + "attn_q_norm.weight"),
                attn_k_norm=vector(gguf, p + "attn_k_norm.weight"),
                attn_output=load(gguf, p + "attn_output.weight"),
                post_attention_norm=vector(gguf, p + "post_attention_norm.weight"),
                ffn_norm=vector(gguf, p + "ffn_norm.weight"),
                ffn_gate_up=load_fused(gguf, [p + "ffn_gate.weight", p + "ffn_up.weight"]),
                ffn_down=load(gguf, p + "ffn_down.weight"),
                post_ffw_norm=vector(gguf, p + "post_ffw_norm.weight"),
            ))
        token_embd = load(gguf, "token_embd.weight")
        output = load(gguf, "output.weight") if "output.weight" in gguf.tensors else token_embd  # tied head
        return cls(cfg, token_embd, blocks, vector(gguf, "output_norm.weight"), output)

    def new_cache(self, n_ctx: int) -> KVCache:
        return KVCache(self.cfg.n_layer, self.cfg.n_kv_head, self.cfg.head_dim, n_ctx)

    def forward(self, tokens: np.ndarray, start_pos: int, cache: KVCache,
                all_logits: bool = False) -> np.ndarray:
        """Logits (vocab,) of the last token, or (T, vocab) with all_logits; extends the cache by T tokens."""
        if not all_logits:
            return self.forward_batch([Segment(np.asarray(tokens), start_pos, cache)])[0]
        return self.logits(self.hidden(tokens, start_pos, cache))             # (T, vocab)

    def forward_batch(self, segments: list[Segment]) -> np.ndarray:
        """Logits (n_segments, vocab) after each segment's last token; every segment extends its own cache."""
        last = np.cumsum([len(s.tokens) for s in segments]) - 1              # the rows that need logits
        return self.logits(self.hidden_batch(segments, outputs=last))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Output norm, tied head and optional soft-capping: (n, dim) -> (n, vocab)."""
        logits = self.output(rms_norm(x, self.output_norm, self.cfg.norm_eps))
        cap = self.cfg.final_logit_softcap
        return np.float32(cap) * np.tanh(logits / np.float32(cap)) if cap else logits

    def hidden(self, tokens: np.ndarray, start_pos: int, cache: KVCache) -> np.ndarray:
        """Final hidden states (T, dim) of one sequence, before the output norm."""
        return self.hidden_batch([Segment(np.asarray(tokens), start_pos, cache)])

    def hidden_batch(self, segments: list[Segment], outputs: np.ndarray | None = None) -> np.ndarray:
        """Final hidden states (ΣT, dim) of the segments' tokens, concatenated in order; only rows ``outputs``
        (n,) if given: as llama.cpp does (inp_out_ids), the last layer's feed-forward then runs on those rows
        alone, each one a batch of its own for the kernels' float order."""
        cfg, eps = self.cfg, self.cfg.norm_eps
        batch = SegmentBatch(segments)                                       # caches grown to fit
        angles = {True: self.rope_local.angles(batch.positions),                      # sliding layers: (cos, sin),
                  False: self.rope_global.angles(batch.positions)}                    # each (ΣT, head_dim/2)
        tokens = np.concatenate([s.tokens for s in segments])
        grouped = gemm_groups(batch.lengths)                                          # (ΣT,) see engine.quant.QTensor
        x = self.token_embd.take_rows(tokens) * np.float32(np.sqrt(cfg.dim))  # (ΣT, dim)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, eps)
            a = self.attention(i, blk, h, batch, *angles[cfg.swa_layers[i]], grouped)   # (ΣT, dim)
            if outputs is not None and i == cfg.n_layer - 1:
                x, a, grouped = x[outputs], a[outputs], gemm_groups([1] * len(outputs))
            x = x + rms_norm(a, blk.post_attention_norm, eps)
            h = rms_norm(x, blk.ffn_norm, eps)
            gate_up = matmul_parts(blk.ffn_gate_up, h, grouped)                     # (T, 2 · ffn_dim)
            f = blk.ffn_down(geglu(gate_up, cfg.ffn_dim, _gelu_table()), grouped)     # gelu(gate) * up
            x = x + rms_norm(f, blk.post_ffw_norm, eps)
        return x

    def attention(self, layer: int, blk: Gemma3Block, h: np.ndarray, batch: SegmentBatch,
                  cos: np.ndarray, sin: np.ndarray, grouped: np.ndarray) -> np.ndarray:
        cfg, eps = self.cfg, self.cfg.norm_eps
        T, d = h.shape[0], cfg.head_dim
        qkv = matmul_parts(blk.attn_qkv, h, grouped)                                # (T, (n_head + 2 n_kv) · d)
        n_q, n_kv = cfg.n_head * d, cfg.n_kv_head * d
        q = qkv[:, :n_q].reshape(T, cfg.n_head, d)                           # (T, n_head, d)
        k = qkv[:, n_q:n_q + n_kv].reshape(T, cfg.n_kv_head, d)              # (T, n_kv, d)
        v = qkv[:, n_q + n_kv:].reshape(T, cfg.n_kv_head, d)                 # (T, n_kv, d)
        q = rms_norm(q.reshape(-1, d), blk.attn_q_norm, eps).reshape(T, cfg.n_head, d)    # QK-norm per head
        k = rms_norm(k.reshape(-1, d), blk.attn_k_norm, eps).reshape(T, cfg.n_kv_head, d)
        window = cfg.sliding_window if cfg.swa_layers[layer] else 0
        out = attend_segments(q, k, v, batch, layer, cos, sin, 1.0, window, True, q_scale=cfg.attn_scale)
        return blk.attn_output(out, grouped)                                 # (T, dim)

    def rerotate_keys(self, cache: KVCache, start: int, end: int, delta: int) -> None:
        """After a context shift, rotate cached keys at [start, end) by delta positions (R(p+δ) = R(δ)R(p)),
        with each layer's own RoPE base."""
        for layer in range(self.cfg.n_layer):
            rope = self.rope_local if self.cfg.swa_layers[layer] else self.rope_global
            cos, sin = rope.angles(np.full(1, abs(delta)))                    # (1, d/2)
            sin = sin if delta > 0 else -sin
            k = cache.k[layer, :, start:end].transpose(1, 0, 2)               # (n, n_kv, d)
            shape = (len(k), cos.shape[1])
            rotated = rope_neox(k, np.broadcast_to(cos, shape), np.broadcast_to(sin, shape))
            cache.k[layer, :, start:end] = rotated.transpose(1, 0, 2).astype(np.float16)   # the cache's precision








@functools.cache
def _gelu_table() -> np.ndarray:
    """ggml's GELU of every fp16 value, rounded to fp16: (65536,) f32 by fp16 bits (ops_jit.gelu_tanh)."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    return gelu_tanh(x).astype(np.float16).astype(np.float32)


def gelu_fp16_table(x: np.ndarray) -> np.ndarray:
    """Tanh-GELU the way ggml's CPU backend computes it (GGML_GELU_FP16): a lookup at x rounded to fp16, 0 below
    -10, identity above 10 (NumPy twin of ops_jit.geglu's GELU half)."""
    y = _gelu_table()[x.astype(np.float16).view(np.uint16)]
    return np.where(x <= -10, np.float32(0.0), np.where(x >= 10, x, y))
