"""The pair-merge loop shared by byte-level BPE and SentencePiece-BPE (llama.cpp's bigram work queue)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

_DEAD = -2


def merge_pairs(symbols: list[str], priority: Callable[[str, str], float | None]) -> list[str]:
    """Repeatedly merge the adjacent pair with the lowest ``priority(left, right)``, leftmost first on ties,
    until no adjacent pair has a priority (None = never merges). Returns the surviving symbols in order.

    A heap of candidate pairs with lazy invalidation: a popped pair is stale if either side has merged since
    it was pushed. Merging always folds the right symbol into the left one, so index 0 never dies.
    """
    n = len(symbols)
    if n < 2:
        return symbols
    text = list(symbols)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        p = priority(text[i], text[i + 1])
        if p is not None:
            heap.append((p, i, i + 1, len(text[i]) + len(text[i + 1])))
    heapq.heapify(heap)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        if nxt[left] != right or len(text[left]) + len(text[right]) != size:
            continue  # stale: one side merged with something else meanwhile
        text[left] += text[right]
        after = nxt[right]
        nxt[left], nxt[right] = after, _DEAD
        for a, b in ((prv[left], left), (left, after)):
            if a >= 0 and b >= 0 and (p := priority(text[a], text[b])) is not None:
                heapq.heappush(heap, (p, a, b, len(text[a]) + len(text[b])))
        if after >= 0:
            prv[after] = left
    out = []
    i = 0
    while i >= 0:
        out.append(text[i])
        i = nxt[i]
    return out
