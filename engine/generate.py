"""Generation as a per-request state machine (Sequence) that a scheduler feeds logits to, yielding typed Steps.

A Sequence hands out the next Segment of tokens to compute (a prefill chunk, or the one token it just sampled) and
turns the logits that come back into Steps. One forward pass can serve many Sequences at once (continuous batching,
engine/runner.py); ``generate`` runs a single one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from engine.kv_cache import KVCache, Segment
from engine.sampling import Sampler, SamplingOptions
from engine.stopping import StopMatcher
from engine.tokenizer import StreamDecoder, Tokenizer


@dataclass(frozen=True)
class Limits:
    """When generation ends and how the context is managed (per request)."""

    num_predict: int = -1            # tokens to generate; -1 unlimited, -2 until the context is full
    stop: tuple[str, ...] = ()       # stop strings, never emitted
    num_ctx: int = 2048              # KV cache size in tokens
    num_keep: int = 4                # tokens kept at the front when the context is shifted or truncated
    num_batch: int = 512             # prompt tokens per prefill forward call
    logprobs: int | None = None      # None: no logprobs; N >= 0: the chosen token's logprob and the top N


@dataclass(frozen=True)
class Metrics:
    prompt_eval_count: int           # prompt tokens, including any prefix reused from the cache
    prompt_eval_duration_ns: int     # time until the prompt's logits were ready
    eval_count: int                  # generated tokens
    eval_duration_ns: int
    prompt_truncated: int = 0        # prompt tokens dropped to fit num_ctx
    prompt_cached: int = 0           # prompt tokens reused from an earlier request's cache


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()   # the most likely tokens at this position, best first


@dataclass(frozen=True)
class Step:
    text: str                                    # text released by this step ('' while a stop string may be forming)
    token: int | None = None
    done_reason: str | None = None               # "stop" | "length" | "cancel" on the final step
    metrics: Metrics | None = None               # final step only
    context: tuple[int, ...] = field(default=())  # final step only: prompt + generated token ids
    logprob: TokenLogprob | None = None


def fit_prompt(tokens: list[int], n_ctx: int, num_keep: int) -> tuple[list[int], int]:
    """Keep the first num_keep tokens and the newest ones so that the prompt leaves room to generate.

    Returns (tokens, number dropped). As Ollama's runner: inputs[:keep] + inputs[-(n_ctx - keep):], but one slot is
    kept free so that at least one token can be generated before the first context shift.
    """
    room = n_ctx - 1
    if len(tokens) <= room:
        return tokens, 0
    keep = max(0, min(num_keep, room // 2))
    kept = tokens[:keep] + tokens[len(tokens) - (room - keep):]
    return kept, len(tokens) - len(kept)


def reusable_prefix(cache: KVCache, prompt: list[int]) -> int:
    """How many cached tokens a new request keeps: the shared prefix, but when it covers the whole prompt (the same
    request again, or a conversation's history), only up to the start of the forward call that computed the prompt's
    last token. The kernels' float order depends on a forward call's size (as llama.cpp's does), so recomputing just
    that token would give it other logits than before, and the same seed another text; recomputing its whole call
    gives the same bits."""
    shared = cache.common_prefix(prompt)
    if shared < len(prompt):
        return shared
    return cache.chunk_start(len(prompt) - 1)


class Sequence:
    """One request's generation: prompt, sampler, stop strings, and the KV cache it writes."""

    def __init__(self, model, tokenizer: Tokenizer, cache: KVCache, prompt: list[int], sampling: SamplingOptions,
                 limits: Limits, constraint=None) -> None:
        if not prompt:
            raise ValueError("empty prompt")
        self.model, self.tokenizer, self.cache, self.limits = model, tokenizer, cache, limits
        self.prompt, self.truncated = fit_prompt(list(prompt), limits.num_ctx, limits.num_keep)
        self.sampler = Sampler(sampling, tokenizer.vocab_size, newline_id=tokenizer.newline_id, n_ctx=limits.num_ctx)
        for t in self.prompt:
            self.sampler.accept(t)
        self.constraint = constraint
        self.decoder, self.stops = StreamDecoder(tokenizer), StopMatcher(limits.stop)
        self.generated: list[int] = []
        self.done_reason: str | None = "length" if limits.num_predict == 0 else None
        self.cached = reusable_prefix(cache, self.prompt)
        cache.truncate(self.cached)
        self.pending = self.prompt[self.cached:]
        self.started_ns = time.perf_counter_ns()
        self.prompt_done_ns = 0
        self.finished = False                # the final Step has been produced

    @property
    def done(self) -> bool:
        return self.done_reason is not None

    @property
    def prefilling(self) -> bool:
        return self.prompt_done_ns == 0

    def next_segment(self, max_tokens: int) -> Segment:
        """The tokens to compute next (at most max_tokens), shifting the context first when it is full."""
        if not self.prefilling and self.cache.length >= self.limits.num_ctx:
            self._shift_context()
        chunk = self.pending[:max(1, max_tokens)]
        return Segment(np.asarray(chunk, np.int64), self.cache.length, self.cache)

    def advance(self, segment: Segment, logits: np.ndarray) -> list[Step]:
        """Record that ``segment`` was computed; with the prompt complete, sample from ``logits``."""
        n = len(segment.tokens)
        self.cache.extend(segment.tokens.tolist())
        self.pending = self.pending[n:]
        if self.pending:
            return []
        if self.prefilling:
            self.prompt_done_ns = time.perf_counter_ns()
        if self.done:                        # num_predict 0: the prompt is evaluated, nothing is generated
            return [self.final_step()]
        return self._sample(logits)

    def cancel(self) -> Step:
        self.done_reason = self.done_reason or "cancel"
        return self.final_step()

    def final_step(self) -> Step:
        self.finished = True
        tail = "" if self.done_reason == "stop" else self.stops.push(self.decoder.flush())[0] + self.stops.flush()
        now = time.perf_counter_ns()
        prompt_done = self.prompt_done_ns or now
        metrics = Metrics(len(self.prompt), prompt_done - self.started_ns, len(self.generated), now - prompt_done,
                          self.truncated, self.cached)
        return Step(tail, None, self.done_reason, metrics, tuple(self.prompt) + tuple(self.generated))

    def _sample(self, logits: np.ndarray) -> list[Step]:
        if self.constraint is not None:
            logits = self.constraint.apply(logits)
        token = self.sampler.sample(logits)
        if token in self.tokenizer.eog_ids:
            self.done_reason = "stop"
            return [self.final_step()]
        self.sampler.accept(token)
        if self.constraint is not None and not self._constraint_accepts(token):
            self.done_reason = "stop"        # e.g. a logit_bias banned every token the format allows
            return [self.final_step()]
        self.generated.append(token)
        text, stopped = self.stops.push(self.decoder.feed(token))
        if stopped or (self.constraint is not None and self.constraint.done):
            self.done_reason = "stop"
        elif self._length_reached():
            self.done_reason = "length"
        self.pending = [token]
        step = Step(text, token, logprob=self._logprob(logits, token))
        return [step, self.final_step()] if self.done else [step]

    def _constraint_accepts(self, token: int) -> bool:
        try:
            self.constraint.accept(token)
        except ValueError:                   # engine.constrained.ConstraintError
            return False
        return True

    def _logprob(self, logits: np.ndarray, token: int) -> TokenLogprob | None:
        if self.limits.logprobs is None:
            return None
        shifted = logits - np.max(logits)
        logp = shifted - np.log(np.sum(np.exp(shifted)))                  # (vocab,) log-softmax
        n = self.limits.logprobs
        top = np.argpartition(-logp, n)[:n] if 0 < n < len(logp) else np.arange(len(logp))[:n]
        top = top[np.argsort(-logp[top], kind="stable")]
        return TokenLogprob(token, float(logp[token]), tuple((int(t), float(logp[t])) for t in top))

    def _length_reached(self) -> bool:
        if self.limits.num_predict >= 0:
            return len(self.generated) >= self.limits.num_predict
        if self.limits.num_predict == -2:
            return self.cache.length + 1 >= self.limits.num_ctx
        return False

    def _shift_context(self) -> None:
        """llama.cpp's context shift: keep num_keep tokens, drop half of the rest, re-rotate the moved keys."""
        n_keep = max(0, min(self.limits.num_keep, self.limits.num_ctx // 2))
        n_discard = (self.cache.length - n_keep) // 2
        self.cache.shift(n_keep, n_discard)
        self.model.rerotate_keys(self.cache, n_keep, self.cache.length, -n_discard)


def generate(model, tokenizer: Tokenizer, cache: KVCache, prompt: list[int], sampling: SamplingOptions,
             limits: Limits, cancel: threading.Event | None = None, constraint=None) -> Iterator[Step]:
    """Run one Sequence to its end on the calling thread (the runner batches many instead)."""
    seq = Sequence(model, tokenizer, cache, prompt, sampling, limits, constraint)
    while not seq.finished:
        if cancel is not None and cancel.is_set():
            yield seq.cancel()
            return
        segment = seq.next_segment(limits.num_batch)
        yield from seq.advance(segment, model.forward_batch([segment])[0])
