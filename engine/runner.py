"""Runner: one loaded model on one worker thread, decoding many requests together (continuous batching).

HTTP threads submit work and read Steps from a per-request queue; only the worker thread touches the model, its
Numba kernels and the KV caches. The worker thread ends when the model has nothing to do and the next job starts a new
one: each thread that runs parallel kernels owns an OpenMP thread pool for as long as it lives, and once the process
holds more pool threads than it has cores, OpenMP stops spin-waiting in every pool (an idle second model halved the
first one's decode speed on 2 cores).

Every step the worker runs one forward pass for all active sequences: each decoding sequence contributes its last
token, and sequences still reading their prompts contribute a chunk each, up to the first one's num_batch prompt
tokens in all, so prompts arriving together are read together. Each chunk is the one the sequence would get alone, so
its bits do not depend on its neighbours. New requests join between steps. A finished sequence leaves its cache in its
slot, so a later request that starts with the same tokens (a chat's next turn) reuses that prefix.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from engine.generate import Limits, Sequence, Step
from engine.kv_cache import KVCache
from engine.sampling import SamplingOptions
from engine.threads import BatchTuners
from engine.tokenizer import Tokenizer

_DONE = object()


class EngineError(RuntimeError):
    """Generation failed inside the engine (reported to the client, never a traceback)."""


@dataclass(eq=False)
class _Job:
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)   # the C queue: one lock a put or get
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Generation(_Job):
    prompt: list[int] = field(default_factory=list)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    limits: Limits = field(default_factory=Limits)
    constraint: object = None
    seq: Sequence | None = None
    slot: int = -1


@dataclass(eq=False)
class _Call(_Job):
    fn: Callable = print


class Runner:
    """Owns a model, its tokenizer and ``num_parallel`` KV cache slots; computes on its own thread."""

    def __init__(self, model, tokenizer: Tokenizer, threads: int = 0, on_thread_start: Callable | None = None,
                 num_parallel: int = 1) -> None:
        self.model, self.tokenizer = model, tokenizer
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots: list[KVCache | None] = [None] * max(1, num_parallel)
        self._free = set(range(len(self._slots)))
        self._active: list[_Generation] = []
        self._waiting: deque[_Generation] = deque()
        self.steps_run = 0                         # forward passes so far (observable in tests and /api/ps)
        self._set_threads, self._threads = on_thread_start, threads
        self.tuners = BatchTuners() if threads == 0 and on_thread_start is not None else None   # 0 = measure
        self._lock = threading.Lock()              # guards _thread and _closed against the worker's exit
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def working(self) -> bool:
        """Whether a worker thread is running (there is none while the model has nothing to do)."""
        with self._lock:
            return self._thread is not None

    @property
    def active(self) -> int:
        """Sequences being generated right now."""
        return len(self._active)

    def generate(self, prompt: list[int], sampling: SamplingOptions, limits: Limits,
                 constraint=None) -> Iterator[Step]:
        """Steps of one generation; closing the iterator early cancels it within one decode step."""
        job = _Generation(prompt=list(prompt), sampling=sampling, limits=limits, constraint=constraint)
        self._submit(job)
        return self._drain(job)

    def call(self, fn: Callable):
        """Run fn(model) on the worker thread between steps and return its result (embeddings, warm-up...)."""
        job = _Call(fn=fn)
        self._submit(job)
        return next(self._drain(job))

    def close(self) -> None:
        with self._lock:
            self._closed, thread = True, self._thread
            self._jobs.put(None)
        if thread is not None:
            thread.join(timeout=60)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise EngineError("the model was unloaded")
            self._jobs.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="pollama-engine")
                self._thread.start()

    def _drain(self, job: _Job) -> Iterator:
        try:
            while (item := job.out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise EngineError(str(item)) from item
                yield item
        finally:
            job.cancel.set()

    def _loop(self) -> None:
        if self._set_threads is not None:                 # calls (embeddings) run at the tuner's current best
            self._set_threads(self.tuners.best if self.tuners else self._threads)
        while self._take_jobs():
            if not self._active and not self._waiting and self._exit_if_idle():
                return
            self._admit()
            self._drop_cancelled()
            if self._active:
                self._step()
        for gen in self._active + list(self._waiting):
            gen.out.put(_DONE)

    def _exit_if_idle(self) -> bool:
        """End this thread if no job came in meanwhile (a later _submit starts a new one)."""
        with self._lock:
            if not self._jobs.empty():
                return False
            self._thread = None
            return True

    def _take_jobs(self) -> bool:
        """Move submitted jobs in, without waiting; False once close() was called."""
        while not self._jobs.empty():                 # only this thread takes jobs: empty() cannot go stale
            job = self._jobs.get_nowait()
            if job is None:
                return False
            if isinstance(job, _Call):
                self._run_call(job)
            else:
                self._waiting.append(job)
        return True

    def _run_call(self, job: _Call) -> None:
        try:
            job.out.put(job.fn(self.model))
        except Exception as exc:  # noqa: BLE001 - forwarded to the caller as EngineError
            job.out.put(exc)
        job.out.put(_DONE)

    def _admit(self) -> None:
        while self._waiting and self._free:
            gen = self._waiting.popleft()
            if gen.cancel.is_set():
                gen.out.put(_DONE)
                continue
            gen.slot = self._best_slot(gen.prompt)
            cache = self._slot_cache(gen.slot, gen.limits.num_ctx)
            try:
                gen.seq = Sequence(self.model, self.tokenizer, cache, gen.prompt, gen.sampling, gen.limits,
                                   gen.constraint)
            except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                self._finish(gen, exc)
                continue
            self._free.discard(gen.slot)
            self._active.append(gen)

    def _best_slot(self, prompt: list[int]) -> int:
        """The free slot whose cached tokens share the longest prefix with ``prompt``."""
        def shared(i: int) -> int:
            cache = self._slots[i]
            return cache.common_prefix(prompt) if cache is not None else -1
        return max(sorted(self._free), key=shared)

    def _slot_cache(self, slot: int, n_ctx: int) -> KVCache:
        cache = self._slots[slot]
        if cache is None:
            cache = self._slots[slot] = self.model.new_cache(n_ctx)
        cache.n_ctx = n_ctx
        if cache.length >= n_ctx:
            cache.truncate(0)
        return cache

    def _drop_cancelled(self) -> None:
        for gen in [g for g in self._active if g.cancel.is_set()]:
            gen.out.put(gen.seq.cancel())
            self._finish(gen)

    def _step(self) -> None:
        """One forward pass: every decoding sequence, and the prompt chunks that fit in the first one's num_batch."""
        batch, budget = [], None
        for gen in self._active:
            if gen.seq.prefilling:
                budget = gen.limits.num_batch if budget is None else budget
                take = min(len(gen.seq.pending), gen.limits.num_batch)     # its chunk as if it ran alone
                if take > budget:
                    continue
                budget -= take
                batch.append((gen, gen.seq.next_segment(take)))
            else:
                batch.append((gen, gen.seq.next_segment(1)))
        prefilling = budget is not None
        tuner = self.tuners.for_batch(len(batch)) if self.tuners else None
        threads = 0 if tuner is None else tuner.best if prefilling else tuner.pick()    # trials time decode steps
        if threads:
            self._set_threads(threads)
        try:
            started = time.perf_counter()
            logits = self.model.forward_batch([segment for _, segment in batch])    # (len(batch), vocab)
            if threads and not prefilling:
                tuner.record(threads, len(batch), time.perf_counter() - started)
            self.steps_run += 1
            for (gen, segment), row in zip(batch, np.asarray(logits), strict=True):
                for step in gen.seq.advance(segment, row):
                    gen.out.put(step)
                if gen.seq.finished:
                    self._finish(gen)
        except Exception as exc:  # noqa: BLE001 - every sequence in the failed batch gets the error
            for gen, _ in batch:
                self._slots[gen.slot] = None
                self._finish(gen, exc)

    def _finish(self, gen: _Generation, error: BaseException | None = None) -> None:
        if error is not None:
            gen.out.put(error)
        gen.out.put(_DONE)
        if gen in self._active:
            self._active.remove(gen)
        if gen.slot >= 0:
            self._free.add(gen.slot)
            gen.slot = -1
