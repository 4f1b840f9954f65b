"""Which models are loaded: name → Runner, loaded on demand, unloaded after keep_alive or by LRU eviction."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from api.admission import Admission, ClientGone
from engine import LoadedModel
from engine.runner import Runner
from engine.warmup import warm_up
from registry import manifest as mf
from registry.errors import ModelNotFound
from registry.names import ModelName
from registry.store import Store

log = logging.getLogger("pollama")

COMPILED_S = 10.0          # a load this slow compiled kernels (a warm one takes about a second)
SLOT_POLL_S = 0.2          # how often a request waiting for a decode slot checks that its client is still there


@dataclass(frozen=True)
class ModelRecord:
    """What the store says about one model: its blobs, template, system prompt and parameters."""

    name: ModelName
    manifest: mf.Manifest
    digest: str                           # sha256 hex of the manifest bytes
    model_path: Path
    template: str | None
    system: str | None
    params: dict
    messages: list
    adapters: tuple[Path, ...]


def read_record(store: Store, name: ModelName) -> ModelRecord:
    """Resolve ``name`` case-insensitively and read its small layers; ModelNotFound if absent."""
    found = store.resolve(name)
    if found is None:
        raise ModelNotFound(name.display)
    manifest, raw = store.read_manifest(found)
    model_layer = manifest.layer(mf.MEDIA_MODEL)
    if model_layer is None:
        raise ModelNotFound(name.display)

    def text(*media_types: str) -> str | None:
        for media_type in media_types:
            layer = manifest.layer(media_type)
            if layer is not None:
                return store.read_blob(layer.digest).decode("utf-8", "replace")
        return None

    params = json.loads(text(mf.MEDIA_PARAMS) or "{}")
    messages = json.loads(text(mf.MEDIA_MESSAGES) or "[]")
    return ModelRecord(
        found, manifest, _sha256_hex(raw), store.blob_path(model_layer.digest),
        text(mf.MEDIA_TEMPLATE, mf.MEDIA_PROMPT), text(mf.MEDIA_SYSTEM),
        params if isinstance(params, dict) else {}, messages if isinstance(messages, list) else [],
        tuple(store.blob_path(layer.digest) for layer in manifest.layers_of(mf.MEDIA_ADAPTER)),
    )


@dataclass
class Loaded:
    record: ModelRecord
    model: LoadedModel
    runner: Runner
    slots: threading.Semaphore = field(default_factory=threading.Semaphore)   # num_parallel decode slots
    users: int = 0                                    # requests holding the model (running, waiting, tokenizing)
    num_ctx: int = 0                                  # context of the latest generation (0 before any)
    keep_alive_s: float = 300.0
    expires_at: float = field(default=float("inf"))   # time.time() seconds; inf while in use or kept forever
    last_used: float = field(default_factory=time.monotonic)


class ModelPool:
    """Loads models through ``loader`` and hands out their Runners; a reaper unloads expired idle models.

    Requests that must wait (for a model load, or for one of a model's ``num_parallel`` decode slots) are counted
    by ``admission``, so that ``max_queue`` bounds them across all models.
    """

    def __init__(self, loader: Callable[..., LoadedModel], *, threads: int = 0, max_loaded: int = 3,
                 num_parallel: int = 1, on_thread_start: Callable | None = None, max_queue: int = 512) -> None:
        self._loader, self._threads, self._max_loaded = loader, threads, max(1, max_loaded)
        self._num_parallel = max(1, num_parallel)
        self._on_thread_start = on_thread_start
        self.admission = Admission(max_queue)
        self._loaded: dict[str, Loaded] = {}                   # keyed by manifest digest
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._reap, daemon=True, name="pollama-reaper").start()

    def acquire(self, record: ModelRecord, keep_alive_s: float) -> tuple[Loaded, int]:
        """The loaded model for ``record`` (loading it if needed), marked in use; returns (entry, load_ns).

        A request that has to wait for a load is admitted first: ServerBusy (503) at once when the queue is full.
        """
        t0 = time.perf_counter_ns()
        with self._lock:
            entry = self._use(self._loaded.get(record.digest), keep_alive_s)
        if entry is None:
            with self.admission.wait():
                entry = self._load(record, keep_alive_s)
        return entry, time.perf_counter_ns() - t0

    def take_slot(self, entry: Loaded, gone: Callable[[], bool] | None = None) -> None:
        """Reserve one of the model's decode slots, waiting (admitted, as in acquire) when all are taken.

        ``gone`` tells that the client disconnected; it is polled while waiting and raises ClientGone.
        """
        if entry.slots.acquire(blocking=False):
            return
        with self.admission.wait():
            while not entry.slots.acquire(timeout=SLOT_POLL_S):
                if gone is not None and gone():
                    raise ClientGone()

    def free_slot(self, entry: Loaded) -> None:
        entry.slots.release()

    def _use(self, entry: Loaded | None, keep_alive_s: float) -> Loaded | None:
        """Mark ``entry`` in use (caller holds self._lock): no unload or eviction until release."""
        if entry is not None:
            entry.users += 1
            entry.keep_alive_s = keep_alive_s
            entry.expires_at = float("inf")
            entry.last_used = time.monotonic()
        return entry

    def _load(self, record: ModelRecord, keep_alive_s: float) -> Loaded:
        with self._lock:
            load_lock = self._load_locks.setdefault(record.digest, threading.Lock())
        with load_lock:
            with self._lock:
                entry = self._use(self._loaded.get(record.digest), keep_alive_s)
            if entry is not None:                  # another request loaded it while this one waited
                return entry
            self._evict_for_one_more()
            runner, model = self._start(record)
            entry = Loaded(record, model, runner, threading.Semaphore(self._num_parallel))
            with self._lock:
                self._loaded[record.digest] = entry
                return self._use(entry, keep_alive_s)

    def _start(self, record: ModelRecord) -> tuple[Runner, LoadedModel]:
        """Load the model and run each kernel path once on its worker thread (a cold start compiles them here,
        not in the middle of someone's generation)."""
        started = time.monotonic()
        log.info("pollama: loading %s", record.name.display)
        model = self._loader(record.model_path, record.adapters)
        runner = Runner(model.model, model.tokenizer, self._threads, self._on_thread_start,
                        num_parallel=self._num_parallel)
        runner.call(warm_up)
        took = time.monotonic() - started
        log.info("pollama: %s ready in %.1f s%s", record.name.display, took,
                 " (the engine's kernels were compiled; they are cached on disk for the next start)"
                 if took > COMPILED_S else "")
        return runner, model

    def release(self, entry: Loaded) -> None:
        """The request using ``entry`` is over: start its keep_alive timer (0 unloads now)."""
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()
            if entry.users == 0:
                entry.expires_at = time.time() + entry.keep_alive_s
        self._drop_idle(entry.record.digest, expired_by=time.time())

    def unload(self, digest: str) -> bool:
        """Unload now if idle, else as soon as its running requests finish (keep_alive 0); False if not loaded."""
        with self._lock:
            entry = self._loaded.get(digest)
            if entry is None:
                return False
            if entry.users:
                entry.keep_alive_s = 0
                return True
        self._drop_idle(digest)
        return True

    def loaded(self) -> list[Loaded]:
        with self._lock:
            return list(self._loaded.values())

    def close(self) -> None:
        self._stop.set()
        for entry in self.loaded():
            self.unload(entry.record.digest)

    def _drop_idle(self, digest: str, expired_by: float | None = None) -> bool:
        """Unload ``digest`` if nobody uses it (and, with ``expired_by``, its keep_alive ran out by then).

        Decided under the lock, so a request that takes the model meanwhile keeps it (and its own keep_alive).
        """
        with self._lock:
            entry = self._loaded.get(digest)
            if entry is None or entry.users or (expired_by is not None and entry.expires_at > expired_by):
                return False
            del self._loaded[digest]
        entry.runner.close()
        return True

    def _evict_for_one_more(self) -> None:
        """Unload least recently used idle models until one more fits in max_loaded."""
        while True:
            with self._lock:
                if len(self._loaded) < self._max_loaded:
                    return
                idle = [e for e in self._loaded.values() if e.users == 0]
                if not idle:
                    return                         # all busy: allow going over rather than failing the request
                victim = min(idle, key=lambda e: e.last_used)
            self._drop_idle(victim.record.digest)

    def _reap(self) -> None:
        while not self._stop.wait(0.5):
            for entry in self.loaded():
                self._drop_idle(entry.record.digest, expired_by=time.time())


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
