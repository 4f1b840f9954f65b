"""The generation loop: prefill in batches, then decode token by token, yielding typed Steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from engine.kv_cache import KVCache
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


@dataclass(frozen=True)
class Metrics:
    prompt_eval_count: int           # prompt tokens, including any prefix reused from the cache
    prompt_eval_duration_ns: int     # time spent on the prompt tokens actually computed
    eval_count: int                  # generated tokens
    eval_duration_ns: int
    prompt_truncated: int = 0        # prompt tokens dropped to fit num_ctx


@dataclass(frozen=True)
class Step:
    text: str                                    # text released by this step ('' while a stop string may be forming)
    token: int | None = None
    done_reason: str | None = None               # "stop" | "length" | "cancel" on the final step
    metrics: Metrics | None = None               # final step only
    context: tuple[int, ...] = field(default=())  # final step only: prompt + generated token ids


def fit_prompt(tokens: list[int], n_ctx: int, num_keep: int) -> tuple[list[int], int]:
    """Keep the first num_keep tokens and the newest ones so that the prompt leaves room to generate.

    Returns (tokens, number dropped). As Ollama's runner: inputs[:keep] + inputs[-(n_ctx - keep):], but we keep one
    slot free so at least one token can be generated before the first context shift.
    """
    room = n_ctx - 1
    if len(tokens) <= room:
        return tokens, 0
    keep = max(0, min(num_keep, room // 2))
    kept = tokens[:keep] + tokens[len(tokens) - (room - keep):]
    return kept, len(tokens) - len(kept)


def generate(model, tokenizer: Tokenizer, cache: KVCache, prompt: list[int], sampling: SamplingOptions,
             limits: Limits, cancel: threading.Event | None = None) -> Iterator[Step]:
    """Run the prompt through ``model`` (reusing what ``cache`` already holds) and sample until a limit is hit."""
    prompt, truncated = fit_prompt(prompt, limits.num_ctx, limits.num_keep)
    sampler = Sampler(sampling, tokenizer.vocab_size, newline_id=tokenizer.newline_id, n_ctx=limits.num_ctx)
    for t in prompt:
        sampler.accept(t)
    t0 = time.perf_counter_ns()
    logits = prefill(model, cache, prompt, limits.num_batch)
    prompt_ns = time.perf_counter_ns() - t0

    decoder, stops = StreamDecoder(tokenizer), StopMatcher(limits.stop)
    generated: list[int] = []
    reason = "length" if limits.num_predict == 0 else None
    t1 = time.perf_counter_ns()
    while reason is None:
        if cancel is not None and cancel.is_set():
            reason = "cancel"
            break
        token = sampler.sample(logits)
        if token in tokenizer.eog_ids:
            reason = "stop"
            break
        sampler.accept(token)
        generated.append(token)
        text, stopped = stops.push(decoder.feed(token))
        if stopped:
            reason = "stop"
        elif _length_reached(len(generated), cache, limits):
            reason = "length"
        yield Step(text, token)
        if reason is None:
            logits = decode_one(model, cache, token, limits)
    tail = "" if reason == "stop" else stops.push(decoder.flush())[0] + stops.flush()
    metrics = Metrics(len(prompt), prompt_ns, len(generated), time.perf_counter_ns() - t1, truncated)
    yield Step(tail, None, reason, metrics, tuple(prompt) + tuple(generated))


def prefill(model, cache: KVCache, prompt: list[int], num_batch: int) -> np.ndarray:
    """Feed the prompt's uncached suffix in batches of num_batch; returns the logits after its last token."""
    if not prompt:
        raise ValueError("empty prompt")
    reuse = min(cache.common_prefix(prompt), len(prompt) - 1)  # the last token is always recomputed for its logits
    cache.truncate(reuse)
    logits = None
    for start in range(reuse, len(prompt), max(1, num_batch)):
        chunk = prompt[start:start + max(1, num_batch)]
        logits = model.forward(np.asarray(chunk, np.int64), start, cache)
        cache.tokens.extend(chunk)
    return logits


def decode_one(model, cache: KVCache, token: int, limits: Limits) -> np.ndarray:
    """Logits after ``token``; shifts the context first when the cache is full (llama.cpp's n_discard = n_left/2)."""
    if cache.length >= limits.num_ctx:
        n_keep = max(0, min(limits.num_keep, limits.num_ctx // 2))
        n_discard = (cache.length - n_keep) // 2
        cache.shift(n_keep, n_discard)
        model.rerotate_keys(cache, n_keep, cache.length, -n_discard)
    logits = model.forward(np.asarray([token], np.int64), cache.length, cache)
    cache.tokens.append(token)
    return logits


def _length_reached(n_generated: int, cache: KVCache, limits: Limits) -> bool:
    if limits.num_predict >= 0:
        return n_generated >= limits.num_predict
    if limits.num_predict == -2:
        return cache.length + 1 >= limits.num_ctx
    return False
