"""The bert architecture (all-MiniLM, bge, mxbai-embed): learned absolute positions and token types, post-norm
LayerNorm blocks, bidirectional attention, GELU feed-forward. An encoder: it returns pooled sentence
embeddings, not logits.

GELU is the exact erf form HF BERT uses (llama.cpp uses the tanh approximation; the two differ by cos 1e-6 on
all-MiniLM), so our vectors match sentence-transformers to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import vectorize

from engine.gguf import GGUFFile
from engine.models._weights import load, load_fused, matmul_parts
from engine.ops import softmax
from engine.quant import QTensor

ARCH = "bert"
POOL_MEAN, POOL_CLS, POOL_LAST = 1, 2, 3      # llama.cpp's LLAMA_POOLING_TYPE values
MAX_SCORES = 1 << 24                           # attention scores (floats) per micro-batch: ~64 MB, 5 × 512 tokens


@dataclass(frozen=True)
class BertConfig:
    n_layer: int
    dim: int
    n_head: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    context_length: int            # learned positions: no input may be longer
    vocab_size: int
    pooling_type: int              # POOL_MEAN / POOL_CLS / POOL_LAST
    normalize: bool                # L2-normalize the pooled vector (Ollama's bert.normalize_embeddings)

    @classmethod
    def from_metadata(cls, md: dict) -> BertConfig:
        def k(key, default=None):
            return md.get(f"{ARCH}.{key}", default)

        dim, n_head = int(k("embedding_length")), int(k("attention.head_count"))
        return cls(
            n_layer=int(k("block_count")), dim=dim, n_head=n_head, head_dim=dim // n_head,
            ffn_dim=int(k("feed_forward_length")), norm_eps=float(k("attention.layer_norm_epsilon")),
            context_length=int(k("context_length")),
            vocab_size=int(k("vocab_size", len(md["tokenizer.ggml.tokens"]))),
            pooling_type=int(k("pooling_type", 0)), normalize=bool(k("normalize_embeddings", True)),
        )


@dataclass(frozen=True)
class BertBlock:
    attn_qkv: tuple[QTensor, ...]    # attn_q | attn_k | attn_v, runs of one type fused: (3 · dim, dim) in all
    attn_qkv_bias: np.ndarray        # (3 · dim,)
    attn_output: QTensor             # (dim, dim)
    attn_output_bias: np.ndarray     # (dim,)
    attn_output_norm: np.ndarray     # (dim,) LayerNorm after attention + residual
    attn_output_norm_bias: np.ndarray
    ffn_up: QTensor                  # (ffn_dim, dim)
    ffn_up_bias: np.ndarray          # (ffn_dim,)
    ffn_down: QTensor                # (dim, ffn_dim)
    ffn_down_bias: np.ndarray        # (dim,)
    layer_output_norm: np.ndarray    # (dim,) LayerNorm after FFN + residual
    layer_output_norm_bias: np.ndarray


@vectorize(cache=True)   # compiled on first use (float32 in, float32 out), not at import
def gelu_erf(x):
    """HF BERT's exact GELU: x · Φ(x) = 0.5 x (1 + erf(x / √2))."""
    return np.float32(0.5 * x * (1.0 + math.erf(x * 0.7071067811865476)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """(x − mean) / sqrt(var + eps) · weight + bias over the last axis (biased variance)."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(np.square(centered), axis=-1, keepdims=True)
    return centered / np.sqrt(var + np.float32(eps)) * weight + bias


class Bert:
    """Batched encoder: every sequence of a batch in one pass, padded only inside attention."""

    def __init__(self, cfg: BertConfig, token_embd: QTensor, position_embd: QTensor, token_types: np.ndarray,
                 token_embd_norm: tuple[np.ndarray, np.ndarray], blocks: list[BertBlock]) -> None:
        if cfg.pooling_type not in (POOL_MEAN, POOL_CLS, POOL_LAST):
            raise ValueError(f"bert pooling type {cfg.pooling_type} gives no sentence embedding")
        self.cfg = cfg
        self.token_embd, self.position_embd, self.token_types = token_embd, position_embd, token_types
        self.token_embd_norm, self.blocks = token_embd_norm, blocks

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Bert:
        cfg = BertConfig.from_metadata(gguf.metadata)

        def vector(name: str) -> np.ndarray:
            return np.array(gguf.array(name), dtype=np.float32).reshape(-1)

        def qkv_names(p: str, suffix: str) -> list[str]:
            fused = f"{p}attn_qkv.{suffix}"
            return [fused] if fused in gguf.tensors else [f"{p}attn_{x}.{suffix}" for x in "qkv"]

        blocks = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            blocks.append(BertBlock(
                attn_qkv=load_fused(gguf, qkv_names(p, "weight")),
                attn_qkv_bias=np.concatenate([vector(n) for n in qkv_names(p, "bias")]),
                attn_output=load(gguf, p + "attn_output.weight"), attn_output_bias=vector(p + "attn_output.bias"),
                attn_output_norm=vector(p + "attn_output_norm.weight"),
                attn_output_norm_bias=vector(p + "attn_output_norm.bias"),
                ffn_up=load(gguf, p + "ffn_up.weight"), ffn_up_bias=vector(p + "ffn_up.bias"),
                ffn_down=load(gguf, p + "ffn_down.weight"), ffn_down_bias=vector(p + "ffn_down.bias"),
                layer_output_norm=vector(p + "layer_output_norm.weight"),
                layer_output_norm_bias=vector(p + "layer_output_norm.bias"),
            ))
        types = np.array(gguf.array("token_types.weight"), dtype=np.float32).reshape(-1, cfg.dim)
        norm = (vector("token_embd_norm.weight"), vector("token_embd_norm.bias"))
        return cls(cfg, load(gguf, "token_embd.weight"), load(gguf, "position_embd.weight"), types, norm, blocks)

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        """Sentence embeddings (n, dim) f32 of n token sequences (each with its [CLS] … [SEP]), pooled by
        ``bert.pooling_type`` and L2-normalized unless the model says ``normalize_embeddings = false``."""
        self._check(batch)
        out = np.empty((len(batch), self.cfg.dim), np.float32)
        for group in self._micro_batches(batch):
            seqs = [batch[i] for i in group]
            out[group] = self._pool(self.hidden(seqs), np.array([len(s) for s in seqs]))
        if self.cfg.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def hidden(self, seqs: list[list[int]]) -> np.ndarray:
        """Final hidden states of all tokens of ``seqs``, packed one sequence after another: (Σ len, dim)."""
        cfg = self.cfg
        lengths = np.array([len(s) for s in seqs])
        valid = np.arange(lengths.max())[None, :] < lengths[:, None]               # (B, T) real tokens
        ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        positions = np.nonzero(valid)[1]                                           # 0..len-1 per sequence
        x = self.token_embd.take_rows(ids) + self.position_embd.take_rows(positions) + self.token_types[0]
        x = layer_norm(x, *self.token_embd_norm, cfg.norm_eps)                     # (N, dim)
        for blk in self.blocks:
            a = self.attention(blk, x, valid)
            x = layer_norm(x + a, blk.attn_output_norm, blk.attn_output_norm_bias, cfg.norm_eps)
            f = blk.ffn_down(gelu_erf(blk.ffn_up(x) + blk.ffn_up_bias)) + blk.ffn_down_bias
            x = layer_norm(x + f, blk.layer_output_norm, blk.layer_output_norm_bias, cfg.norm_eps)
        return x

    def attention(self, blk: BertBlock, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Bidirectional multi-head attention; each query sees every real token of its own sequence only."""
        cfg = self.cfg
        B, T = valid.shape
        H, d = cfg.n_head, cfg.head_dim
        qkv = matmul_parts(blk.attn_qkv, x) + blk.attn_qkv_bias                     # (N, 3 · dim)
        padded = np.zeros((B * T, 3 * cfg.dim), np.float32)
        padded[valid.reshape(-1)] = qkv
        q, k, v = padded.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)           # each (B, H, T, d)
        scores = np.matmul(q, k.transpose(0, 1, 3, 2)) * np.float32(1.0 / math.sqrt(d))  # (B, H, T, T)
        scores = np.where(valid[:, None, None, :], scores, np.float32(-np.inf))    # hide padding keys
        out = np.matmul(softmax(scores), v)                                        # (B, H, T, d)
        out = out.transpose(0, 2, 1, 3).reshape(B * T, cfg.dim)[valid.reshape(-1)]  # (N, dim)
        return blk.attn_output(out) + blk.attn_output_bias

    def _pool(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Packed hidden states (N, dim) -> one row per sequence (B, dim)."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        if self.cfg.pooling_type == POOL_CLS:
            return x[starts]
        if self.cfg.pooling_type == POOL_LAST:
            return x[starts + lengths - 1]
        sums = np.add.reduceat(x.astype(np.float64), starts, axis=0)              # CLS and SEP included
        return (sums / lengths[:, None]).astype(np.float32)

    def _micro_batches(self, batch: list[list[int]]) -> list[list[int]]:
        """Indices of ``batch`` grouped by similar length (little padding), each group's attention scores
        within MAX_SCORES floats so a big request cannot exhaust memory."""
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        groups: list[list[int]] = []
        for i in order:
            T = len(batch[i])   # the longest so far: groups grow in length order
            if groups and (len(groups[-1]) + 1) * self.cfg.n_head * T * T <= MAX_SCORES:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _check(self, batch: list[list[int]]) -> None:
        for seq in batch:
            if not 0 < len(seq) <= self.cfg.context_length:
                raise ValueError(f"bert input of {len(seq)} tokens (must be 1 to {self.cfg.context_length})")
            if min(seq) < 0 or max(seq) >= self.cfg.vocab_size:
                raise ValueError(f"token id outside the vocabulary of {self.cfg.vocab_size}")
