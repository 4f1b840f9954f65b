"""Per-sequence key/value cache with llama.cpp's f16 precision, grown on demand up to n_ctx, shiftable."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

_GROW_STEP = 256   # positions allocated at a time, so a large num_ctx costs memory only when used


class KVCache:
    """K and V of every layer: (n_layer, n_kv_head, capacity, head_dim), K stored after RoPE.

    Values are rounded to float16 on write, as llama.cpp's default f16 cache holds them, but kept in float32 arrays:
    NumPy converts f16 slowly, and attention reads the whole cache every token.
    """

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int, v_dim: int | None = None) -> None:
        self.n_ctx = n_ctx
        self.shape = (n_layer, n_kv_head, head_dim, v_dim or head_dim)
        self.k = np.zeros((n_layer, n_kv_head, 0, head_dim), np.float32)
        self.v = np.zeros((n_layer, n_kv_head, 0, v_dim or head_dim), np.float32)
        self.tokens: list[int] = []                                   # token ids whose K/V are held, in order

    @property
    def length(self) -> int:
        return len(self.tokens)

    def reserve(self, n_positions: int) -> None:
        """Make room for positions [0, n_positions); never beyond n_ctx."""
        if n_positions > self.n_ctx:
            raise ValueError(f"context of {self.n_ctx} tokens exceeded ({n_positions})")
        capacity = self.k.shape[2]
        if n_positions <= capacity:
            return
        new_capacity = min(self.n_ctx, max(n_positions, capacity * 2, _GROW_STEP))
        self.k = _grow(self.k, new_capacity)
        self.v = _grow(self.v, new_capacity)

    def write(self, layer: int, start_pos: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k/v (T, n_kv_head, d) at positions [start_pos, start_pos + T)."""
        end = start_pos + k.shape[0]
        self.k[layer, :, start_pos:end] = k.transpose(1, 0, 2).astype(np.float16)
        self.v[layer, :, start_pos:end] = v.transpose(1, 0, 2).astype(np.float16)

    def keys(self, layer: int, end: int) -> np.ndarray:
        return self.k[layer, :, :end]                                 # (n_kv_head, end, d)

    def values(self, layer: int, end: int) -> np.ndarray:
        return self.v[layer, :, :end]

    def truncate(self, n: int) -> None:
        """Forget every position from n on (their slots are simply overwritten later)."""
        del self.tokens[n:]

    def common_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` are already cached."""
        n = 0
        for a, b in zip(self.tokens, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def shift(self, n_keep: int, n_discard: int) -> None:
        """Drop positions [n_keep, n_keep + n_discard) and move the rest down.

        The moved keys still carry their old rotation; the model re-rotates them (rerotate_keys).
        """
        end = self.length
        src = slice(n_keep + n_discard, end)
        dst = slice(n_keep, end - n_discard)
        self.k[:, :, dst] = self.k[:, :, src].copy()
        self.v[:, :, dst] = self.v[:, :, src].copy()
        del self.tokens[n_keep:n_keep + n_discard]


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one sequence: computed at positions [start_pos, start_pos + len(tokens)) into cache."""

    tokens: np.ndarray           # (T,) token ids
    start_pos: int
    cache: KVCache


def segment_rows(segments: list[Segment]) -> Iterator[tuple[slice, Segment]]:
    """Each segment with the rows it occupies when all segments' tokens are concatenated."""
    start = 0
    for s in segments:
        yield slice(start, start + len(s.tokens)), s
        start += len(s.tokens)


def _grow(a: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros(a.shape[:2] + (capacity,) + a.shape[3:], a.dtype)
    out[:, :, : a.shape[2]] = a
    return out
