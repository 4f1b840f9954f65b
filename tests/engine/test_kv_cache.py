"""KVCache remembers where each forward call began, so a repeated request can recompute a whole call."""

from __future__ import annotations

from engine.generate import reusable_prefix
from engine.kv_cache import KVCache


def test_chunk_starts_follow_extend_truncate_and_shift():
    cache = KVCache(1, 1, 4, 64)
    cache.extend([1, 2, 3, 4, 5])          # a prompt in one call
    cache.extend([6])                      # decoded tokens, one call each
    cache.extend([7])
    assert cache.chunk_starts == [0, 5, 6]
    assert [cache.chunk_start(p) for p in (0, 4, 5, 6)] == [0, 0, 5, 6]
    cache.truncate(6)
    assert cache.chunk_starts == [0, 5] and cache.tokens == [1, 2, 3, 4, 5, 6]
    cache.extend([8, 9, 10])
    cache.shift(2, 3)                      # positions 2..4 dropped, the rest moves down by 3
    assert cache.tokens == [1, 2, 6, 8, 9, 10]
    assert cache.chunk_starts == [0, 2, 3]


def test_reusable_prefix_recomputes_the_call_of_the_last_prompt_token():
    cache = KVCache(1, 1, 4, 64)
    cache.extend([1, 2, 3, 4, 5])
    cache.extend([6])
    cache.extend([7, 8, 9])                # a follow-up turn's new tokens, one call
    cache.extend([10])
    assert reusable_prefix(cache, [1, 2, 3, 9]) == 3                 # parts ways: keep the shared prefix
    assert reusable_prefix(cache, [1, 2, 3, 4, 5]) == 0              # the first prompt again: its whole call
    assert reusable_prefix(cache, [1, 2, 3, 4, 5, 6, 7, 8, 9]) == 6  # the second turn again: from its call
    assert reusable_prefix(cache, [1, 2, 3, 4, 5, 6]) == 5           # ends on a decoded token: that step alone
