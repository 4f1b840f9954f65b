"""Pick the next token from a logit vector: llama.cpp's 2024 sampler chain (Ollama's), as pure functions.

The chain (llama.cpp ``llama_sampling_sample``; Ollama used it from 0.1 through the 2024 Go runner):

    logit_bias → penalties ─┬─ temperature <= 0: greedy
                            ├─ mirostat 1 / 2:   temperature, mirostat v1 / v2, draw, update mu
                            └─ otherwise:        top_k → tail_free → typical → top_p → min_p → temp, draw

A greedy request runs penalties and argmax as one compiled call (engine.sampling_jit.greedy_penalized, whose
NumPy twin is ``greedy(apply_penalties(...))`` here).

Every transform is a pure function. Full-vocabulary steps take ``logits`` (f32 (vocab,)); truncating steps
take and return *candidates* ``(ids, logits)``, two aligned arrays (int (n,), f32 (n,)). No function modifies
its arguments, and a disabled transform returns its input unchanged. ``Sampler`` holds the only state: the
penalty history, mirostat's mu and the random generator.

Candidate order carries no meaning between steps: each order-dependent step sorts first (as llama.cpp's
softmax does), by descending logit with ties to the lower id. llama.cpp's ``std::sort`` leaves tie order
unspecified; breaking ties by id keeps runs reproducible. A sort of 262144 logits costs 15-30 ms, so top_k,
top_p, min_p, mirostat and the draw never sort more than 4096 candidates: ``top_k`` selects with a
group-maximum bound and sorts only the survivors, and top_p or the draw on a bigger set sort just the head
they need (_sorted_head). Only tail_free and typical, which need the whole sorted distribution, sort a
vocabulary if top_k is disabled.

Arithmetic follows llama.cpp: logits and probabilities are float32, ``expf``/``logf`` are float64 results
rounded once, sums run in order in float32, and the draw widens to float64 as libstdc++'s
``std::discrete_distribution`` does. With the same seed and a top_k > 0 chain, draws match a g++ build of
llama.cpp's samplers token for token. Normalizers over more than 4096 candidates (mirostat, or top_k
disabled) are summed in NumPy's order, not llama.cpp's sorted one, so there a cut-off or a draw that lands
within float32 rounding of a boundary can differ.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.sampling_jit import greedy_penalized, top_k_penalized

Candidates = tuple[np.ndarray, np.ndarray]          # (ids int (n,), logits f32 (n,))

LLAMA_DEFAULT_SEED = 0xFFFFFFFF                     # llama.cpp's "pick a random seed"; Ollama's seed -1
MIROSTAT_M = 100                                    # head size mirostat v1 fits its Zipf exponent on
_GROUP = 64                                         # group size of top_k's group-maximum pre-selection
_SORT_LIMIT = 4096                                  # larger candidate sets are never sorted in full


@dataclass(frozen=True)
class SamplingOptions:
    """Per-request sampling options; defaults are Ollama's ``api.DefaultOptions()`` (2024)."""

    temperature: float = 0.8
    """Divides the survivors' logits, last; <= 0 means greedy (argmax of the penalized logits)."""
    top_k: int = 40
    """Keep the k most likely tokens; <= 0 keeps all."""
    top_p: float = 0.9
    """Nucleus: keep the smallest most-likely prefix whose probability reaches top_p; >= 1 disables."""
    min_p: float = 0.0
    """Keep tokens with p >= min_p * p_max; <= 0 disables (not in Ollama's 2024 defaults, hence 0)."""
    typical_p: float = 1.0
    """Locally typical: keep tokens with surprise nearest the entropy, up to mass typical_p; 1 disables."""
    tfs_z: float = 1.0
    """Tail-free: cut where the sorted distribution's normalized curvature sums past z; 1 disables."""
    repeat_last_n: int = 64
    """How many recent tokens (prompt included) the penalties look at; 0 disables, -1 means n_ctx."""
    repeat_penalty: float = 1.1
    """Logits of recent tokens: divided by this if positive, multiplied if not; 1 disables."""
    presence_penalty: float = 0.0
    """Subtracted once from the logit of every token present in the recent history."""
    frequency_penalty: float = 0.0
    """Subtracted from the logit of a recent token once per occurrence."""
    penalize_newline: bool = True
    """False gives the newline token its unpenalized logit back."""
    mirostat: int = 0
    """0 off, 1 mirostat (v1), 2 mirostat 2.0; replaces top_k, tfs_z, typical_p, top_p and min_p."""
    mirostat_tau: float = 5.0
    """Target surprise in bits (−log2 p of the drawn token)."""
    mirostat_eta: float = 0.1
    """Learning rate of mu: mu -= eta * (observed surprise − tau)."""
    seed: int = -1
    """-1: a random seed; otherwise std::mt19937 is seeded with seed mod 2**32, so runs repeat exactly."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, value) pairs added to the raw logits before anything else; -inf bans a token."""


# ----------------------------------------------------------------------------------------------------------
# float32 arithmetic as llama.cpp's C++ does it


def _expf(x: np.ndarray) -> np.ndarray:
    """``expf`` on a float32 array: the float64 exp rounded once to float32 (what glibc's expf returns)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _logf(x: np.ndarray) -> np.ndarray:
    """``logf`` on a float32 array (−inf for 0): the float64 log rounded once to float32."""
    with np.errstate(divide="ignore"):
        return np.log(x.astype(np.float64)).astype(np.float32)


def _sum_f32(x: np.ndarray) -> np.float32:
    """A C loop summing float32 values in order (``np.sum`` adds pairwise and rounds differently)."""
    return np.add.accumulate(x, dtype=np.float32)[-1] if x.size else np.float32(0.0)


def _first_true(mask: np.ndarray, default: int) -> int:
    """Index of the first True in ``mask``, else ``default``: a C loop-with-break, vectorized."""
    i = int(np.argmax(mask)) if mask.size else 0
    return i if mask.size and mask[i] else default


def _is_sorted(logits: np.ndarray) -> bool:
    """True when the logits never increase (the candidates are in softmax order)."""
    return bool(np.all(logits[1:] <= logits[:-1]))


# ----------------------------------------------------------------------------------------------------------
# full-vocabulary transforms


def apply_logit_bias(logits: np.ndarray, bias: Sequence[tuple[int, float]]) -> np.ndarray:
    """Add each bias value to its token's logit (a float32 ``logits[id] += value``).

    logits: f32 (vocab,). An id outside the vocabulary raises ValueError (NumPy would wrap negative ids).
    """
    if not bias:
        return logits
    out = logits.copy()                                                     # (vocab,)
    for token, value in bias:
        if not 0 <= token < out.size:
            raise ValueError(f"logit_bias token id {token} is outside the vocabulary (size {out.size})")
        out[token] += np.float32(value)
    return out


def apply_penalties(logits: np.ndarray, history: np.ndarray, repeat_penalty: float, presence_penalty: float,
                    frequency_penalty: float, *, newline_id: int | None = None,
                    penalize_newline: bool = True) -> np.ndarray:
    """Repetition, frequency and presence penalties for the tokens in ``history`` (llama.cpp's single pass).

    For each distinct token seen c > 0 times in ``history`` (the last repeat_last_n tokens, any order):
    ``l = l * repeat if l <= 0 else l / repeat`` (dividing a negative logit would make it *more* likely),
    then ``l -= c * frequency + presence``. Other tokens are untouched. ``penalize_newline=False`` gives the
    newline token its input logit back. Empty history or neutral penalties (1, 0, 0): returns ``logits``.

    llama.cpp's 2024 history starts as 64 zeros, so token id 0 counts as repeated until 64 real tokens have
    been accepted. That quirk is left out here: only real tokens are penalized.
    logits: f32 (vocab,); history: int (h,).
    """
    neutral = repeat_penalty == 1.0 and presence_penalty == 0.0 and frequency_penalty == 0.0
    if len(history) == 0 or neutral:
        return logits
    tokens, counts = np.unique(np.asarray(history), return_counts=True)    # (u,), (u,)
    out = logits.copy()                                                     # (vocab,)
    seen = out[tokens]                                                      # (u,) f32
    repeat = np.float32(repeat_penalty)
    seen = np.where(seen <= 0, seen * repeat, seen / repeat)
    seen -= counts.astype(np.float32) * np.float32(frequency_penalty) + np.float32(presence_penalty)
    out[tokens] = seen
    if not penalize_newline and newline_id is not None:
        out[newline_id] = logits[newline_id]
    return out


def temperature(logits: np.ndarray, t: float) -> np.ndarray:
    """Divide the logits by ``t`` in float32: t < 1 sharpens, t > 1 flattens (t <= 0 is greedy, elsewhere)."""
    return logits / np.float32(t)


def greedy(logits: np.ndarray) -> int:
    """The id of the largest logit; a tie goes to the lowest id (``std::max_element`` keeps the first)."""
    return int(np.argmax(logits))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities in the given order, as llama.cpp computes them: ``expf(l - max)``, float32 sum, divide.

    logits: f32 (n,) → f32 (n,). llama.cpp also sorts here; in this module callers use sort_candidates.
    """
    if logits.size == 0:
        return np.zeros(0, np.float32)
    unnormalized = _expf(logits - logits.max())                             # (n,) f32
    return unnormalized / _sum_f32(unnormalized)


def sort_candidates(ids: np.ndarray, logits: np.ndarray) -> Candidates:
    """Sort by descending logit, ties by ascending id; candidates already in that order come back as is."""
    if _is_sorted(logits):
        return ids, logits
    order = np.lexsort((ids, -logits))                                      # (n,) last key is primary
    return ids[order], logits[order]


# ----------------------------------------------------------------------------------------------------------
# truncating transforms on candidates


def _top_k_positions(logits: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest logits: sorted (logit desc, position asc) if k <= 4096, else ascending.

    Small k: a cheap lower bound on the k-th largest logit is the k-th largest of the maxima of n/64 groups
    (k different groups each hold a value that large); ``logits >= bound`` keeps the top k plus usually a
    few more, and only those get sorted. Group j is every (n/64)-th logit from j, so the maxima are one
    vectorized max over 64 rows. Large k: the exact k-th largest from ``np.partition``; ties at it go to the
    lowest positions.
    """
    n = logits.size
    n_groups = n // _GROUP
    if k <= _SORT_LIMIT and k * 4 <= n_groups:
        maxima = logits[: n_groups * _GROUP].reshape(_GROUP, n_groups).max(axis=0)   # (n_groups,)
        if n % _GROUP:
            maxima = np.append(maxima, logits[n_groups * _GROUP:].max())
        bound = np.partition(maxima, maxima.size - k)[maxima.size - k]
    else:
        bound = np.partition(logits, n - k)[n - k]                          # exactly the k-th largest
    if k > _SORT_LIMIT:
        keep = logits > bound                                               # (n,) bool
        keep[np.flatnonzero(logits == bound)[: k - np.count_nonzero(keep)]] = True
        return np.flatnonzero(keep)                                         # (k,) ascending positions
    survivors = np.flatnonzero(logits >= bound)                             # (≥k,) ascending positions
    order = np.argsort(-logits[survivors], kind="stable")[:k]              # equal logits: lower id first
    return survivors[order]


def top_k(ids: np.ndarray, logits: np.ndarray, k: int, min_keep: int = 1) -> Candidates:
    """Keep the k largest logits; k <= 0 keeps all. Ties go to the lower position (= id for a vocabulary).

    k becomes ``min(max(k, min_keep), n)``. Up to 4096 survivors come back sorted descending, more come back
    in input order, and with nothing cut the input comes back unchanged: later steps sort what they need,
    and sorting 262144 logits per token would dominate decoding. ids, logits: (n,) → (k,).
    """
    n = logits.size
    k = n if k <= 0 else min(max(k, min_keep), n)
    if k >= n:
        return ids, logits
    keep = _top_k_positions(logits, k)                                      # (k,)
    return ids[keep], logits[keep]


def tail_free(ids: np.ndarray, logits: np.ndarray, z: float, min_keep: int = 1) -> Candidates:
    """Tail-free sampling (Phillips 2019): cut where the sorted distribution's curvature is used up.

    Sort, softmax; first differences d1_i = p_i − p_{i+1}, second differences |d1_i − d1_{i+1}| (n − 2 of
    them), normalized to sum 1 (uniform if the sum is <= 1e-6). For the first i where their running sum
    exceeds z and i >= min_keep, keep i tokens: the index, not i + 1, as llama.cpp does. z >= 1 or n <= 2:
    no-op.
    """
    if z >= 1.0 or logits.size <= 2:
        return ids, logits
    ids, logits = sort_candidates(ids, logits)
    probs = softmax(logits)                                                 # (n,)
    d1 = probs[:-1] - probs[1:]                                             # (n-1,)
    d2 = np.abs(d1[:-1] - d1[1:])                                           # (n-2,)
    total = _sum_f32(d2)
    d2 = d2 / total if total > np.float32(1e-6) else np.full_like(d2, np.float32(1.0) / np.float32(d2.size))
    cum = np.add.accumulate(d2, dtype=np.float32)                           # (n-2,)
    index = np.arange(d2.size)
    keep = _first_true((cum > np.float32(z)) & (index >= min_keep), logits.size)
    return ids[:keep], logits[:keep]


def typical(ids: np.ndarray, logits: np.ndarray, p: float, min_keep: int = 1) -> Candidates:
    """Locally typical sampling (Meister et al. 2022): prefer tokens whose surprise is near the entropy.

    H = −Σ p log p; score_i = |−log p_i − H|; order by score (stable sort); keep the shortest score-ordered
    prefix whose mass exceeds p (at least min_keep tokens), in score order. p >= 1: no-op.
    llama.cpp's H turns NaN when a probability underflows to 0 (0 · log 0); such terms count as 0 here.
    """
    if p >= 1.0 or logits.size == 0:
        return ids, logits
    ids, logits = sort_candidates(ids, logits)
    probs = softmax(logits)                                                 # (n,)
    neg_log = -_logf(probs)                                                 # (n,) surprise in nats
    entropy = _sum_f32(np.where(probs > 0, probs * neg_log, np.float32(0.0)))
    order = np.argsort(np.abs(neg_log - entropy), kind="stable")            # (n,)
    cum = np.add.accumulate(probs[order], dtype=np.float32)                 # (n,)
    index = np.arange(cum.size)
    keep = _first_true((cum > np.float32(p)) & (index >= min_keep - 1), cum.size - 1) + 1
    return ids[order[:keep]], logits[order[:keep]]


def _sorted_head(ids: np.ndarray, logits: np.ndarray, mass: float) -> tuple[Candidates, np.ndarray]:
    """The shortest sorted head whose probabilities, normalized over *all* candidates, sum to >= mass.

    Returns the head (sorted candidates) and those probabilities, f32. Instead of sorting a whole vocabulary
    it takes the top 64, 512, 4096, … until the head holds enough mass; the normalizer is NumPy's sum of
    NumPy's expf, not llama.cpp's sum in sorted order.
    """
    n = logits.size
    unnormalized = logits - logits.max()                                    # (n,) f32
    np.exp(unnormalized, out=unnormalized)                                  # in place: fresh pages cost ~1 ms
    total = unnormalized.sum(dtype=np.float32)
    k = 64
    while True:
        keep = _top_k_positions(logits, min(k, n))                          # (k,)
        if keep.size > _SORT_LIMIT:                                         # came back in position order
            keep = keep[np.argsort(-logits[keep], kind="stable")]
        probs = unnormalized[keep] / total                                  # (k,) f32
        if k >= n or _sum_f32(probs) >= np.float32(mass):
            return (ids[keep], logits[keep]), probs
        k *= 8


def top_p(ids: np.ndarray, logits: np.ndarray, p: float, min_keep: int = 1) -> Candidates:
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest most-likely prefix with mass >= p.

    Sort, softmax, and keep i + 1 tokens for the first i where the running sum is >= p and i + 1 >= min_keep.
    p >= 1: no-op. More than 4096 unsorted candidates (top_k disabled) are cut via _sorted_head.
    """
    if p >= 1.0 or logits.size == 0:
        return ids, logits
    if logits.size > _SORT_LIMIT and not _is_sorted(logits):
        (ids, logits), probs = _sorted_head(ids, logits, p)
    else:
        ids, logits = sort_candidates(ids, logits)
        probs = softmax(logits)                                             # (n,)
    cum = np.add.accumulate(probs, dtype=np.float32)                        # (n,)
    index = np.arange(cum.size)
    keep = _first_true((cum >= np.float32(p)) & (index + 1 >= min_keep), cum.size - 1) + 1
    return ids[:keep], logits[:keep]


def min_p(ids: np.ndarray, logits: np.ndarray, p: float, min_keep: int = 1) -> Candidates:
    """Keep the tokens with probability >= p · p_max, i.e. logit >= max logit + log p (Nguyen et al. 2024).

    Order is preserved. Should that leave fewer than min_keep, the min_keep largest are kept (llama.cpp's
    sorted fallback). p <= 0: no-op.
    """
    if p <= 0.0 or logits.size == 0:
        return ids, logits
    floor = logits.max() + _logf(np.asarray(p, np.float32))                 # f32 smallest logit kept
    keep = logits >= floor                                                  # (n,) bool
    if np.count_nonzero(keep) >= min_keep:
        return ids[keep], logits[keep]
    return top_k(ids, logits, min_keep)


# ----------------------------------------------------------------------------------------------------------
# mirostat (Basu et al. 2021): a truncation that adapts so the drawn tokens' surprise tracks tau


def mirostat_k(sorted_probs: np.ndarray, mu: float, n_vocab: int) -> int:
    """Mirostat v1's top-k size from the head of a sorted distribution and the current mu.

    Fit a Zipf exponent s to the head (least squares through the origin of b_i = log(p_i / p_{i+1}) on
    t_i = log((i+2)/(i+1)), over the m − 1 pairs), then ``k = (ε · 2^mu / (1 − N^−ε))^(1/s)`` with ε = s − 1:
    the k at which a Zipf(s) top-k has surprise mu. s follows llama.cpp's float32 sums; k is evaluated as
    log2 k in float64 (llama.cpp's float32 powf overflows for large mu), with the limit 1 / ln N at ε = 0,
    and clamped into [1, n_vocab]: llama.cpp's int(k) = 0 becomes top_k(0), the *whole* vocabulary, which
    can lock mirostat into ever-wider sampling. A flat head (s <= 0: no Zipf fit) keeps all tokens.
    sorted_probs: f32 (m,) the m largest probabilities, descending.
    """
    i = np.arange(sorted_probs.size - 1, dtype=np.float32)                  # (m-1,)
    t = _logf((i + 2) / (i + 1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = _logf(sorted_probs[:-1] / sorted_probs[1:])
        s_hat = np.float64(_sum_f32(t * b) / _sum_f32(t * t))
        if not (s_hat > 0 and np.isfinite(s_hat)):
            return n_vocab
        eps = s_hat - 1.0
        n = np.float64(n_vocab)
        ratio = 1.0 / np.log(n) if eps == 0 else eps / (1.0 - n**-eps)   # ε·2^mu / (1 − N^−ε) = ratio·2^mu
        log2_k = (np.log2(ratio) + mu) / s_hat
    return int(min(max(np.exp2(min(log2_k, 63.0)), 1.0), n_vocab))


def mirostat_v1(ids: np.ndarray, logits: np.ndarray, mu: float, n_vocab: int,
                m: int = MIROSTAT_M) -> Candidates:
    """Mirostat v1 truncation: k from the m most likely tokens (mirostat_k), then top_k(k).

    Probability ratios do not depend on the normalizer, so the head is softmaxed on its own.
    """
    head = top_k(ids, logits, m)[1]                                         # (≤m,) sorted logits
    return top_k(ids, logits, mirostat_k(softmax(head), mu, n_vocab))


def mirostat_v2(ids: np.ndarray, logits: np.ndarray, mu: float) -> Candidates:
    """Mirostat 2.0 truncation: keep tokens with surprise −log2 p <= mu (at least the most likely), in order.

    −log2 p <= mu ⇔ logit >= max + log Σ exp(l − max) − mu · ln 2: one pass, no sort of the vocabulary.
    """
    top = logits.max()
    unnormalized = logits - top                                             # (n,) f32
    np.exp(unnormalized, out=unnormalized)                                  # in place: fresh pages cost ~1 ms
    log_total = math.log(float(unnormalized.sum(dtype=np.float64)))
    keep = logits >= float(top) + log_total - mu * math.log(2.0)            # (n,) bool
    return (ids[keep], logits[keep]) if keep.any() else top_k(ids, logits, 1)


def mirostat_update(mu: float, p_token: float, tau: float, eta: float) -> float:
    """mu − eta · (surprise − tau), surprise = −log2 p of the drawn token in the truncated distribution.

    A token more surprising than tau lowers mu (the next cut keeps fewer tokens); a less surprising one
    raises it.
    """
    surprise = -math.log2(p_token) if p_token > 0 else math.inf
    return mu - eta * (surprise - tau)


# ----------------------------------------------------------------------------------------------------------
# the random draw: std::mt19937 and libstdc++'s std::discrete_distribution<int>


class StdMT19937:
    """``std::mt19937`` bit for bit, plus libstdc++'s ``generate_canonical<double, 53>``.

    NumPy's MT19937 is the same generator with the same tempering; only seeding differs. The state is built
    here with the C++ rule ``x_i = 1812433253 · (x_{i−1} ^ (x_{i−1} >> 30)) + i`` (mod 2³²) and handed over.
    """

    def __init__(self, seed: int) -> None:
        key = np.empty(624, np.uint32)                                      # (624,) the twister state
        x = seed & 0xFFFFFFFF
        for i in range(624):
            key[i] = x
            x = (1812433253 * (x ^ (x >> 30)) + i + 1) & 0xFFFFFFFF
        self._bits = np.random.MT19937(0)
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}

    def next_u32(self) -> int:
        """The next 32-bit output (``rng()`` in C++)."""
        return int(self._bits.random_raw())

    def canonical(self) -> float:
        """A double in [0, 1) from two outputs a, b: (a + b · 2³²) / 2⁶⁴, kept below 1 (libstdc++)."""
        a, b = self._bits.random_raw(2)
        u = (float(a) + float(b) * 2.0**32) / 2.0**64
        return u if u < 1.0 else math.nextafter(1.0, 0.0)


def draw(probs: np.ndarray, u: float) -> int:
    """The index ``std::discrete_distribution<int>(probs)`` picks for the uniform ``u`` in [0, 1).

    libstdc++: widen to double, divide by the in-order sum, take running sums with the last forced to 1, and
    return the first index whose running sum is >= u (``std::lower_bound``). probs: (n,), any positive scale.
    With fewer than two probabilities libstdc++ returns 0 without calling the generator at all, so callers
    should not consume a random number then (Sampler does not).
    """
    p = np.asarray(probs, np.float64)                                       # (n,)
    if p.size < 2:
        return 0
    cum = np.add.accumulate(p / np.add.accumulate(p)[-1])                   # (n,)
    cum[-1] = 1.0
    return int(np.searchsorted(cum, u, side="left"))


def pick(ids: np.ndarray, logits: np.ndarray, u: float) -> tuple[int, float]:
    """llama.cpp's final step: sort, softmax, draw with ``u``; returns (token id, its probability).

    Beyond 4096 candidates only the sorted head that the draw reaches is built (_sorted_head).
    """
    if logits.size > _SORT_LIMIT and not _is_sorted(logits):
        (ids, _), probs = _sorted_head(ids, logits, u)
        cum = np.add.accumulate(probs.astype(np.float64))                   # (head,)
        i = min(int(np.searchsorted(cum, u, side="left")), ids.size - 1)
        return int(ids[i]), float(probs[i])
    ids, logits = sort_candidates(ids, logits)
    probs = softmax(logits)                                                 # (n,) f32
    i = draw(probs, u)
    return int(ids[i]), float(probs[i])


# ----------------------------------------------------------------------------------------------------------


class Sampler:
    """One request's sampler: penalty history, mirostat mu and the random generator around the chain above.

    mu starts at 2·tau, as in llama.cpp's sampler objects, its 2023 ``main`` and the mirostat paper: the first
    cut then keeps tokens up to twice the target surprise, and eta pulls mu in within a few tokens. Ollama's
    2024 runner never set mu, so value-initialization left it at 0 and mirostat began greedy (mu climbs by
    about eta·tau per token); that was an accident, not a choice, and is not reproduced.
    """

    def __init__(self, options: SamplingOptions, vocab_size: int, *, newline_id: int | None = None,
                 n_ctx: int = 2048) -> None:
        self.options = options
        self.vocab_size = vocab_size
        self.newline_id = newline_id
        self.mu = 2.0 * options.mirostat_tau
        seed = options.seed & 0xFFFFFFFF                                    # Go int → C uint32
        self.seed = secrets.randbits(32) if seed == LLAMA_DEFAULT_SEED else seed
        self._rng = StdMT19937(self.seed)
        window = n_ctx if options.repeat_last_n < 0 else options.repeat_last_n
        self._ring = np.zeros(window, np.int64)                             # (window,) recent tokens
        self._n_accepted = 0
        self._ids = np.arange(vocab_size)                                   # (vocab,) all candidate ids

    def accept(self, token: int) -> None:
        """Push a token (prompt or generated) into the penalty history."""
        if self._ring.size:
            self._ring[self._n_accepted % self._ring.size] = token
        self._n_accepted += 1

    def history(self) -> np.ndarray:
        """The last repeat_last_n accepted tokens: int (≤window,), in ring order (penalties only count)."""
        return self._ring[: min(self._n_accepted, self._ring.size)]

    def sample(self, logits: np.ndarray) -> int:
        """The next token id for ``logits`` (f32 (vocab,), not modified)."""
        if logits.shape != (self.vocab_size,):
            raise ValueError(f"logits have shape {logits.shape}, expected ({self.vocab_size},)")
        o = self.options
        logits = apply_logit_bias(np.asarray(logits, np.float32), o.logit_bias)
        penalties = (self.history(), o.repeat_penalty, o.presence_penalty, o.frequency_penalty)
        newline = {"newline_id": self.newline_id, "penalize_newline": o.penalize_newline}
        if o.temperature <= 0:
            return greedy_penalized(logits, *penalties, **newline)
        if o.mirostat in (1, 2):
            return self._sample_mirostat(temperature(apply_penalties(logits, *penalties, **newline), o.temperature))
        ids, logits = self._penalized_top_k(logits, penalties, newline)
        ids, logits = tail_free(ids, logits, o.tfs_z)
        ids, logits = typical(ids, logits, o.typical_p)
        ids, logits = top_p(ids, logits, o.top_p)
        ids, logits = min_p(ids, logits, o.min_p)
        return self._draw(ids, temperature(logits, o.temperature))[0]

    def _penalized_top_k(self, logits: np.ndarray, penalties: tuple, newline: dict) -> Candidates:
        """top_k(ids, apply_penalties(logits, ...), top_k): one compiled call where it applies, else the NumPy chain
        (the same candidates either way)."""
        k = self.options.top_k
        head = top_k_penalized(logits, *penalties, k, **newline)
        return head if head is not None else top_k(self._ids, apply_penalties(logits, *penalties, **newline), k)

    def _sample_mirostat(self, logits: np.ndarray) -> int:
        """Truncate by mu, draw, then move mu by the drawn token's surprise (renormalized probability)."""
        o = self.options
        if o.mirostat == 1:
            ids, kept = mirostat_v1(self._ids, logits, self.mu, self.vocab_size)
        else:
            ids, kept = mirostat_v2(self._ids, logits, self.mu)
        token, p_token = self._draw(ids, kept)
        self.mu = mirostat_update(self.mu, p_token, o.mirostat_tau, o.mirostat_eta)
        return token

    def _draw(self, ids: np.ndarray, logits: np.ndarray) -> tuple[int, float]:
        """Draw a candidate: (token id, its probability); a lone one takes no random number (libstdc++)."""
        if ids.size == 1:
            return int(ids[0]), 1.0
        return pick(ids, logits, self._rng.canonical())
