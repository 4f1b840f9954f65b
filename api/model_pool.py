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

from engine import LoadedModel
from engine.runner import Runner
from registry import manifest as mf
from registry.errors import ModelNotFound
from registry.names import ModelName
from registry.store import Store

log = logging.getLogger("pollama")


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
    users: int = 0
    keep_alive_s: float = 300.0
    expires_at: float = field(default=float("inf"))   # time.time() seconds; inf while in use or kept forever
    last_used: float = field(default_factory=time.monotonic)


class ModelPool:
    """Loads models through ``loader`` and hands out their Runners; a reaper unloads expired idle models."""

    def __init__(self, loader: Callable[..., LoadedModel], *, threads: int = 0, max_loaded: int = 3,
                 num_parallel: int = 1, on_thread_start: Callable | None = None) -> None:
        self._loader, self._threads, self._max_loaded = loader, threads, max(1, max_loaded)
        self._num_parallel = max(1, num_parallel)
        self._on_thread_start = on_thread_start
        self._loaded: dict[str, Loaded] = {}                   # keyed by manifest digest
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._reap, daemon=True, name="pollama-reaper").start()

    def acquire(self, record: ModelRecord, keep_alive_s: float) -> tuple[Loaded, int]:
        """The loaded model for ``record`` (loading it if needed), marked in use; returns (entry, load_ns)."""
        t0 = time.perf_counter_ns()
        with self._lock:
            load_lock = self._load_locks.setdefault(record.digest, threading.Lock())
        with load_lock:
            entry = self._loaded.get(record.digest)
            if entry is None:
                self._evict_for_one_more()
                model = self._loader(record.model_path, record.adapters)
                runner = Runner(model.model, model.tokenizer, self._threads, self._on_thread_start,
                                num_parallel=self._num_parallel)
                entry = Loaded(record, model, runner)
                with self._lock:
                    self._loaded[record.digest] = entry
            with self._lock:
                entry.users += 1
                entry.keep_alive_s = keep_alive_s
                entry.expires_at = float("inf")
                entry.last_used = time.monotonic()
        return entry, time.perf_counter_ns() - t0

    def release(self, entry: Loaded) -> None:
        """The request using ``entry`` is over: start its keep_alive timer (0 unloads now)."""
        with self._lock:
            entry.users -= 1
            entry.last_used = time.monotonic()
            if entry.users == 0:
                entry.expires_at = time.time() + entry.keep_alive_s
            expired = entry.users == 0 and entry.keep_alive_s <= 0
        if expired:
            self.unload(entry.record.digest)

    def unload(self, digest: str) -> bool:
        """Unload now if idle, else as soon as its running requests finish (keep_alive 0)."""
        with self._lock:
            entry = self._loaded.get(digest)
            if entry is None:
                return False
            if entry.users:
                entry.keep_alive_s = 0
                return True
            del self._loaded[digest]
        entry.runner.close()
        return True

    def loaded(self) -> list[Loaded]:
        with self._lock:
            return list(self._loaded.values())

    def close(self) -> None:
        self._stop.set()
        for entry in self.loaded():
            self.unload(entry.record.digest)

    def _evict_for_one_more(self) -> None:
        while True:
            with self._lock:
                if len(self._loaded) < self._max_loaded:
                    return
                idle = [e for e in self._loaded.values() if e.users == 0]
                if not idle:
                    return                         # all busy: allow going over rather than failing the request
                victim = min(idle, key=lambda e: e.last_used)
            self.unload(victim.record.digest)

    def _reap(self) -> None:
        while not self._stop.wait(0.5):
            now = time.time()
            for entry in self.loaded():
                if entry.users == 0 and entry.expires_at <= now:
                    self.unload(entry.record.digest)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
