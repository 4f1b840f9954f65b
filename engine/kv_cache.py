"""Per-sequence key/value cache with llama.cpp's f16 precision, grown on demand up to n_ctx, shiftable."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba.typed import List

_GROW_STEP = 256   # positions allocated at a time, so a large num_ctx costs memory only when used


class KVCache:
    """K and V of every layer, K stored after RoPE, in float16 as llama.cpp's default cache holds them.

    The arrays hold the halves' bits as uint16 (Numba has no float16 type; its kernels convert with
    engine.fpmath.f16_to_f32), and ``k`` / ``keys`` / ``values`` give float16 views for NumPy code. K is stored
    transposed, ``kt`` (n_layer, n_kv_head, head_dim, capacity), so that a query's scores against consecutive
    positions are contiguous (vector lanes) in the attention kernel; ``k`` is the same data seen as (n_layer,
    n_kv_head, capacity, head_dim). V is (n_layer, n_kv_head, capacity, v_dim).
    """

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int, v_dim: int | None = None) -> None:
        self.n_ctx = n_ctx
        self.shape = (n_layer, n_kv_head, head_dim, v_dim or head_dim)
        self.kt = np.zeros((n_layer, n_kv_head, head_dim, 0), np.uint16)
        self.v = np.zeros((n_layer, n_kv_head, 0, v_dim or head_dim), np.uint16)
        self.tokens: list[int] = []                                   # token ids whose K/V are held, in order
        self.chunk_starts: list[int] = []      # first position of each forward call that wrote here, ascending

    @property
    def k(self) -> np.ndarray:
        """K as float16 (n_layer, n_kv_head, capacity, head_dim): a view of ``kt``, writable."""
        return self.kt.view(np.float16).transpose(0, 1, 3, 2)

    @property
    def length(self) -> int:
        return len(self.tokens)

    def reserve(self, n_positions: int) -> None:
        """Make room for positions [0, n_positions); never beyond n_ctx."""
        if n_positions > self.n_ctx:
            raise ValueError(f"context of {self.n_ctx} tokens exceeded ({n_positions})")
        capacity = self.v.shape[2]
        if n_positions <= capacity:
            return
        new_capacity = min(self.n_ctx, max(n_positions, capacity * 2, _GROW_STEP))
        self.kt = _grow(self.kt, new_capacity, axis=3)
        self.v = _grow(self.v, new_capacity, axis=2)

    def write(self, layer: int, start_pos: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store k/v (T, n_kv_head, d) at positions [start_pos, start_pos + T)."""
        end = start_pos + k.shape[0]
        self.k[layer, :, start_pos:end] = k.transpose(1, 0, 2).astype(np.float16)
        self.v[layer, :, start_pos:end] = v.transpose(1, 0, 2).astype(np.float16).view(np.uint16)

    def keys(self, layer: int, end: int) -> np.ndarray:
        return self.k[layer, :, :end]                                 # (n_kv_head, end, d)

    def values(self, layer: int, end: int) -> np.ndarray:
        return self.v[layer, :, :end].view(np.float16)

    def extend(self, tokens: list[int]) -> None:
        """Record that one forward call computed ``tokens`` at the next positions."""
        self.chunk_starts.append(len(self.tokens))
        self.tokens.extend(tokens)

    def truncate(self, n: int) -> None:
        """Forget every position from n on (their slots are simply overwritten later)."""
        del self.tokens[n:]
        self.chunk_starts = [p for p in self.chunk_starts if p < n]

    def chunk_start(self, position: int) -> int:
        """Where the forward call that computed ``position`` began (0 if unknown)."""
        return max((p for p in self.chunk_starts if p <= position), default=0)

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
        self.kt[..., dst] = self.kt[..., src].copy()
        self.v[:, :, dst] = self.v[:, :, src].copy()
        del self.tokens[n_keep:n_keep + n_discard]
        starts = [p for p in self.chunk_starts if p < n_keep] + [n_keep]
        self.chunk_starts = starts + [p - n_discard for p in self.chunk_starts if p > n_keep + n_discard]


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one sequence: computed at positions [start_pos, start_pos + len(tokens)) into cache."""

    tokens: np.ndarray           # (T,) token ids
    start_pos: int
    cache: KVCache


class SegmentBatch:
    """The segments of one forward call, their caches grown to hold the new positions."""

    def __init__(self, segments: list[Segment]) -> None:
        for s in segments:
            s.cache.reserve(s.start_pos + len(s.tokens))
        self.segments = segments
        self.positions = np.concatenate([np.arange(s.start_pos, s.start_pos + len(s.tokens)) for s in segments])
        self.lengths = [len(s.tokens) for s in segments]

    @property
    def decoding(self) -> bool:
        """Several sequences, one new token each: the continuous-batching step."""
        return len(self.segments) > 1 and max(self.lengths) == 1

    @cached_property
    def cache_arrays(self) -> tuple[List, List]:
        """(kt, v) of every segment's cache, gathered once per call for kernels that attend all segments at once
        (typed lists: one compiled kernel for any number of sequences)."""
        return List([s.cache.kt for s in self.segments]), List([s.cache.v for s in self.segments])


def segment_rows(segments: list[Segment]) -> Iterator[tuple[slice, Segment]]:
    """Each segment with the rows it occupies when all segments' tokens are concatenated."""
    start = 0
    for s in segments:
        yield slice(start, start + len(s.tokens)), s
        start += len(s.tokens)


def _grow(a: np.ndarray, capacity: int, axis: int) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = capacity
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out
