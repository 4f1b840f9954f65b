"""The llama architecture (Llama 1/2/3, Mistral, TinyLlama, SmolLM2): RMSNorm, RoPE on adjacent pairs,
grouped-query attention, SwiGLU feed-forward, optional tied output head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.gguf import GGUFFile
from engine.kv_cache import KVCache, Segment, SegmentBatch
from engine.models._weights import load, load_fused, matmul_parts, vector
from engine.ops import RopeTable, rope_normal
from engine.ops_jit import attend_segments, rms_norm, silu_mul
from engine.quant import QTensor, gemm_groups

ARCH = "llama"


@dataclass(frozen=True)
class LlamaConfig:
    n_layer: int
    dim: int
    n_head: int
    n_kv_head: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    rope_base: float
    rope_dim: int
    rope_freq_scale: float
    vocab_size: int
    context_length: int

    @classmethod
    def from_metadata(cls, md: dict) -> LlamaConfig:
        def k(key, default=None):
            return md.get(f"{ARCH}.{key}", default)

        n_head = int(k("attention.head_count"))
        dim = int(k("embedding_length"))
        head_dim = int(k("attention.key_length", dim // n_head))
        scale = float(k("rope.scaling.factor", 0.0) or 0.0)
        return cls(
            n_layer=int(k("block_count")), dim=dim, n_head=n_head,
            n_kv_head=int(k("attention.head_count_kv", n_head)), head_dim=head_dim,
            ffn_dim=int(k("feed_forward_length")), norm_eps=float(k("attention.layer_norm_rms_epsilon")),
            rope_base=float(k("rope.freq_base", 10000.0)), rope_dim=int(k("rope.dimension_count", head_dim)),
            rope_freq_scale=1.0 / scale if scale else 1.0,
            vocab_size=int(k("vocab_size", len(md["tokenizer.ggml.tokens"]))),
            context_length=int(k("context_length", 2048)),
        )


@dataclass(frozen=True)
class LlamaBlock:
    attn_norm: np.ndarray      # (dim,)
    attn_qkv: tuple[QTensor, ...]   # attn_q | attn_k | attn_v, runs of one quant type fused (models/_weights.py)
    attn_output: QTensor       # (dim, n_head · head_dim)
    ffn_norm: np.ndarray       # (dim,)
    ffn_gate_up: tuple[QTensor, ...]  # ffn_gate | ffn_up, fused when of one type: (2 · ffn_dim, dim) in all
    ffn_down: QTensor          # (dim, ffn_dim)


class Llama:
    """Forward pass over a KV cache; weights stay quantized and are multiplied by engine.quant kernels."""

    def __init__(self, cfg: LlamaConfig, token_embd: QTensor, blocks: list[LlamaBlock],
                 output_norm: np.ndarray, output: QTensor) -> None:
        self.cfg = cfg
        self.token_embd, self.blocks, self.output_norm, self.output = token_embd, blocks, output_norm, output
        self.rope = RopeTable(cfg.rope_dim, cfg.rope_base, cfg.rope_freq_scale)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Llama:
        cfg = LlamaConfig.from_metadata(gguf.metadata)

        blocks = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            blocks.append(LlamaBlock(
                attn_norm=vector(gguf, p + "attn_norm.weight"),
                attn_qkv=load_fused(gguf, [p + f"attn_{x}.weight" for x in "qkv"]),
                attn_output=load(gguf, p + "attn_output.weight"),
                ffn_norm=vector(gguf, p + "ffn_norm.weight"),
                ffn_gate_up=load_fused(gguf, [p + "ffn_gate.weight", p + "ffn_up.weight"]),
                ffn_down=load(gguf, p + "ffn_down.weight"),
            ))
        token_embd = load(gguf, "token_embd.weight")
        output = load(gguf, "output.weight") if "output.weight" in gguf.tensors else token_embd  # tied head
        return cls(cfg, token_embd, blocks, vector(gguf, "output_norm.weight"), output)

    def new_cache(self, n_ctx: int) -> KVCache:
        return KVCache(self.cfg.n_layer, self.cfg.n_kv_head, self.cfg.head_dim, n_ctx)

    def forward(self, tokens: np.ndarray, start_pos: int, cache: KVCache, all_logits: bool = False) -> np.ndarray:
        """Logits (vocab,) of the last token, or (T, vocab) with all_logits; extends the cache by T tokens."""
        if not all_logits:
            return self.forward_batch([Segment(np.asarray(tokens), start_pos, cache)])[0]
        x = self.hidden(tokens, start_pos, cache)                              # (T, dim)
        return self.output(rms_norm(x, self.output_norm, self.cfg.norm_eps))   # (T, vocab)

    def forward_batch(self, segments: list[Segment]) -> np.ndarray:
        """Logits (n_segments, vocab) after each segment's last token; every segment extends its own cache.

        Several sequences decode together this way: their tokens share every weight read, only attention is
        per sequence.
        """
        last = np.cumsum([len(s.tokens) for s in segments]) - 1              # the rows that need logits
        x = self.hidden_batch(segments, outputs=last)                         # (n_segments, dim)
        return self.output(rms_norm(x, self.output_norm, self.cfg.norm_eps))   # (n_segments, vocab)

    def hidden(self, tokens: np.ndarray, start_pos: int, cache: KVCache) -> np.ndarray:
        """Final hidden states (T, dim) of one sequence, before the output norm."""
        return self.hidden_batch([Segment(np.asarray(tokens), start_pos, cache)])

    def hidden_batch(self, segments: list[Segment], outputs: np.ndarray | None = None) -> np.ndarray:
        """Final hidden states (ΣT, dim) of the segments' tokens, concatenated in order; only rows ``outputs``
        (n,) if given: as llama.cpp does (inp_out_ids), the last layer's feed-forward then runs on those rows
        alone, each one a batch of its own for the kernels' float order."""
        cfg = self.cfg
        batch = SegmentBatch(segments)                                       # caches grown to fit
        cos, sin = self.rope.angles(batch.positions)                                  # (ΣT, rope_dim/2)
        grouped = gemm_groups(batch.lengths)                                          # (ΣT,) see engine.quant.QTensor
        x = self.token_embd.take_rows(np.concatenate([s.tokens for s in segments]))   # (ΣT, dim)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, cfg.norm_eps)
            a = self.attention(i, blk, h, batch, cos, sin, grouped)        # (ΣT, dim)
            if outputs is not None and i == cfg.n_layer - 1:
                x, a, grouped = x[outputs], a[outputs], gemm_groups([1] * len(outputs))
            x = x + a
            h = rms_norm(x, blk.ffn_norm, cfg.norm_eps)
            gate_up = matmul_parts(blk.ffn_gate_up, h, grouped)                     # (ΣT, 2 · ffn_dim)
            x = x + blk.ffn_down(silu_mul(gate_up, cfg.ffn_dim), grouped)    # silu(gate) * up
        return x

    def attention(self, layer: int, blk: LlamaBlock, h: np.ndarray, batch: SegmentBatch,
                  cos: np.ndarray, sin: np.ndarray, grouped: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        T, d = h.shape[0], cfg.head_dim
        qkv = matmul_parts(blk.attn_qkv, h, grouped)                                   # (T, (n_head + 2 n_kv) · d)
        n_q, n_kv = cfg.n_head * d, cfg.n_kv_head * d
        q = qkv[:, :n_q].reshape(T, cfg.n_head, d)                            # (T, n_head, d), before RoPE
        k = qkv[:, n_q:n_q + n_kv].reshape(T, cfg.n_kv_head, d)               # (T, n_kv, d)
        v = qkv[:, n_q + n_kv:].reshape(T, cfg.n_kv_head, d)                  # (T, n_kv, d)
        scale = np.float32(1.0) / np.sqrt(np.float32(d))
        out = attend_segments(q, k, v, batch, layer, cos, sin, scale, 0, False)   # RoPE (adjacent pairs), cache
        return blk.attn_output(out, grouped)                                      # (T, dim)

    def rerotate_keys(self, cache: KVCache, start: int, end: int, delta: int) -> None:
        """After a context shift, rotate cached keys at [start, end) by delta positions (R(p+δ) = R(δ)R(p))."""
        cos, sin = self.rope.angles(np.full(1, abs(delta)))
        sin = sin if delta > 0 else -sin
        for layer in range(self.cfg.n_layer):
            k = cache.k[layer, :, start:end].transpose(1, 0, 2)               # (n, n_kv, d)
            rotated = rope_normal(k, np.repeat(cos, len(k), 0), np.repeat(sin, len(k), 0))
            cache.k[layer, :, start:end] = rotated.transpose(1, 0, 2).astype(np.float16)   # the cache's precision
