"""Runner: one loaded model on one worker thread; HTTP threads submit work and read Steps from a queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from engine.generate import Limits, Step, generate
from engine.kv_cache import KVCache
from engine.sampling import SamplingOptions
from engine.tokenizer import Tokenizer

_DONE = object()


class EngineError(RuntimeError):
    """Generation failed inside the engine (reported to the client, never a traceback)."""


@dataclass
class _Job:
    work: Callable[[threading.Event], Iterator]
    out: queue.Queue = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)


class Runner:
    """Owns a model, its tokenizer and a KV cache; runs every computation on its own thread.

    Numba kernels and the cache are touched only by the worker thread. A finished sequence's cache is kept so
    that the next request starting with the same tokens (a chat's next turn) skips recomputing that prefix.
    """

    def __init__(self, model, tokenizer: Tokenizer, threads: int = 0, on_thread_start: Callable | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._cache: KVCache | None = None
        self._thread = threading.Thread(target=self._loop, args=(on_thread_start, threads), daemon=True,
                                        name="pollama-engine")
        self.active = 0
        self._thread.start()

    def generate(self, prompt: list[int], sampling: SamplingOptions, limits: Limits) -> Iterator[Step]:
        """Steps of one generation; closing the iterator early cancels it within one decode step."""
        return self.submit(lambda cancel: generate(self.model, self.tokenizer, self._cache_for(limits), prompt,
                                                   sampling, limits, cancel))

    def call(self, fn: Callable):
        """Run fn(model) on the worker thread and return its result (for embeddings, warm-up, ...)."""
        return next(self.submit(lambda cancel: iter([fn(self.model)])))

    def submit(self, work: Callable[[threading.Event], Iterator]) -> Iterator:
        job = _Job(work)
        self._jobs.put(job)
        return self._drain(job)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _drain(self, job: _Job) -> Iterator:
        try:
            while (item := job.out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise EngineError(str(item)) from item
                yield item
        finally:
            job.cancel.set()

    def _cache_for(self, limits: Limits) -> KVCache:
        if self._cache is None or self._cache.n_ctx != limits.num_ctx:
            self._cache = self.model.new_cache(limits.num_ctx)
        return self._cache

    def _loop(self, on_thread_start: Callable | None, threads: int) -> None:
        if on_thread_start is not None:
            on_thread_start(threads)
        while (job := self._jobs.get()) is not None:
            self.active += 1
            try:
                for item in job.work(job.cancel):
                    job.out.put(item)
                    if job.cancel.is_set():
                        break
            except Exception as exc:  # noqa: BLE001 - forwarded to the requesting thread as EngineError
                if self._cache is not None:
                    self._cache.truncate(0)
                job.out.put(exc)
            finally:
                self.active -= 1
                job.out.put(_DONE)
